package link

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/zenconn/server/internal/leaktest"
	"github.com/zenconn/server/nodemsg"
	"github.com/zenconn/server/shm"
)

// childEnv, when set to a number of loops, makes the test binary play a
// worker: it attaches the rings it inherited and answers on them.
const childEnv = "ZENCONN_LINK_TEST_CHILD"

func TestMain(m *testing.M) {
	if v := os.Getenv(childEnv); v != "" {
		os.Exit(child(v))
	}
	leaktest.VerifyTestMain(m)
}

// child attaches the rings, reads one record from the agent, and writes
// "loop i" on each loop's ring and the agent's record back on the
// housekeeping ring.
func child(loopsArg string) int {
	loops, _ := strconv.Atoi(loopsArg)
	l, err := Attach(loops)
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	from := l.FromAgent().Consumer()
	var got []byte
	for deadline := time.Now().Add(10 * time.Second); got == nil && time.Now().Before(deadline); {
		from.Wait(100 * time.Millisecond)
		_, _ = from.Read(func(rec []byte) { got = append([]byte(nil), rec...) })
	}
	for i := range l.Loops() {
		if l.Loop(i).Producer().Write([]byte("loop "+strconv.Itoa(i)), time.Second) != nil {
			return 1
		}
	}
	if got == nil || l.Housekeeping().Producer().Write(got, time.Second) != nil {
		return 1
	}
	return 0
}

// TestChildAttaches passes the rings to a child process as ExtraFiles and
// checks that every ring reaches the same ring on the other side.
func TestChildAttaches(t *testing.T) {
	const loops = 3
	l, err := Create(nodemsg.MaxWorkers-1, loops, shm.MinCapacity)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	files, err := l.Files()
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != fdsPerRing*(loops+2) {
		t.Fatalf("%d files for %d loops", len(files), loops)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+strconv.Itoa(loops))
	cmd.ExtraFiles = files
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	CloseFiles(files)
	if err := l.FromAgent().Producer().Write([]byte("hello"), time.Second); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	read := func(r *shm.Ring) (out []string) {
		_, _ = r.Consumer().Read(func(rec []byte) { out = append(out, string(rec)) })
		return out
	}
	for i := range loops {
		if got := read(l.Loop(i)); len(got) != 1 || got[0] != "loop "+strconv.Itoa(i) {
			t.Errorf("ring of loop %d holds %q", i, got)
		}
	}
	if got := read(l.Housekeeping()); len(got) != 1 || got[0] != "hello" {
		t.Errorf("housekeeping ring holds %q", got)
	}
}

func TestLayout(t *testing.T) {
	l, err := Create(0, 2, shm.MinCapacity)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	to := l.ToAgent()
	if l.Loops() != 2 || len(to) != 3 || to[0] != l.Loop(0) || to[1] != l.Loop(1) || to[2] != l.Housekeeping() {
		t.Fatalf("ToAgent is not the loops' rings then the housekeeping ring")
	}
	seen := map[*shm.Ring]bool{}
	for _, r := range append(to, l.FromAgent()) {
		if seen[r] {
			t.Fatal("a ring appears twice")
		}
		seen[r] = true
	}
	if _, err := Attach(0); err == nil {
		t.Error("Attach with no loops accepted")
	}
}

func TestCreateRefuses(t *testing.T) {
	for _, tc := range []struct {
		name                    string
		worker, loops, ringSize int
	}{
		{"negative worker", -1, 1, shm.MinCapacity},
		{"worker past the maximum", nodemsg.MaxWorkers, 1, shm.MinCapacity},
		{"no loops", 0, 0, shm.MinCapacity},
		{"ring too small", 0, 1, 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if l, err := Create(tc.worker, tc.loops, tc.ringSize); err == nil {
				_ = l.Close()
				t.Fatal("accepted")
			}
		})
	}
}
