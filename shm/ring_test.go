package shm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zenconn/server/internal/leaktest"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	leaktest.VerifyTestMain(m)
}

func newTestRing(t testing.TB, capacity int) *Ring {
	t.Helper()
	r, err := Create("test", capacity)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func readAll(t testing.TB, c *Consumer) [][]byte {
	t.Helper()
	var out [][]byte
	if _, err := c.Read(func(rec []byte) { out = append(out, bytes.Clone(rec)) }); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCreateValidatesCapacity(t *testing.T) {
	for _, c := range []int{0, 100, 4095, 5000, MaxCapacity * 2} {
		if r, err := Create("bad", c); err == nil {
			r.Close()
			t.Errorf("Create(%d) succeeded", c)
		}
	}
}

func TestWriteRead(t *testing.T) {
	r := newTestRing(t, 4096)
	p, c := r.Producer(), r.Consumer()
	for _, s := range []string{"", "a", "hello", strings.Repeat("x", 100)} {
		if err := p.TryWrite([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if got := readAll(t, c); len(got) != 0 {
		t.Fatalf("records visible before Flush: %q", got)
	}
	p.Flush()
	got := readAll(t, c)
	want := []string{"", "a", "hello", strings.Repeat("x", 100)}
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if string(got[i]) != want[i] {
			t.Fatalf("record %d = %q, want %q", i, got[i], want[i])
		}
	}
	if r.Len() != 0 {
		t.Fatalf("Len = %d after reading everything", r.Len())
	}
}

func TestFullAndTooLarge(t *testing.T) {
	r := newTestRing(t, 4096)
	p, c := r.Producer(), r.Consumer()
	if err := p.TryWrite(make([]byte, r.MaxRecord()+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized record: %v", err)
	}
	rec := make([]byte, 100) // 104 bytes with its header
	n := 0
	for {
		err := p.TryWrite(rec)
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 4096/104 {
		t.Fatalf("%d records fit, want %d", n, 4096/104)
	}
	p.Flush()
	if err := p.Write(rec, 10*time.Millisecond); !errors.Is(err, ErrFull) {
		t.Fatalf("Write on a full ring with no reader: %v, want ErrFull after the timeout", err)
	}
	if got := len(readAll(t, c)); got != n {
		t.Fatalf("read %d records, want %d: a record was dropped", got, n)
	}
	if err := p.TryWrite(rec); err != nil {
		t.Fatalf("write after the reader freed space: %v", err)
	}
}

// TestWrapAround writes records whose sizes do not divide the ring so that
// every record boundary, including the wrap marker, is exercised.
func TestWrapAround(t *testing.T) {
	r := newTestRing(t, 4096)
	p, c := r.Producer(), r.Consumer()
	seq := 0
	for round := 0; round < 200; round++ {
		for i := 0; i < 3; i++ {
			rec := bytes.Repeat([]byte{byte(seq)}, 1+(seq*37)%900)
			if err := p.TryWrite(rec); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			seq++
		}
		p.Flush()
		got := readAll(t, c)
		if len(got) != 3 {
			t.Fatalf("round %d: %d records", round, len(got))
		}
		for i, rec := range got {
			s := seq - 3 + i
			if len(rec) != 1+(s*37)%900 || rec[0] != byte(s) || rec[len(rec)-1] != byte(s) {
				t.Fatalf("record %d torn: len %d first %d", s, len(rec), rec[0])
			}
		}
	}
}

// TestModel runs random operations against the ring and a plain slice
// queue and requires the same observable results. The seed is printed.
func TestModel(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	r := newTestRing(t, 8192)
	p, c := r.Producer(), r.Consumer()
	var model [][]byte     // published and unread
	var unflushed [][]byte // written, not flushed
	footprint := func(n int) int { return int(align8(uint64(recordHeader + n))) }
	for op := 0; op < 20000; op++ {
		switch rng.IntN(4) {
		case 0, 1: // write
			n := rng.IntN(r.MaxRecord() + 1)
			if rng.IntN(4) != 0 {
				n = rng.IntN(64)
			}
			rec := make([]byte, n)
			for i := range rec {
				rec[i] = byte(rng.Uint32())
			}
			err := p.TryWrite(rec)
			switch {
			case err == nil:
				unflushed = append(unflushed, rec)
			case errors.Is(err, ErrFull):
				// Full is only allowed when the record, plus the rest of
				// the data area if it must wrap, does not fit in what the
				// reader has freed.
				used := int(p.head - r.tail.Load())
				if used+2*footprint(n) <= r.Capacity() {
					t.Fatalf("op %d: ErrFull with %d of %d bytes used for a %d-byte record", op, used, r.Capacity(), n)
				}
			default:
				t.Fatalf("op %d: %v", op, err)
			}
		case 2:
			p.Flush()
			model = append(model, unflushed...)
			unflushed = nil
		case 3:
			got := readAll(t, c)
			if len(got) != len(model) {
				t.Fatalf("op %d: read %d records, model has %d", op, len(got), len(model))
			}
			for i := range got {
				if !bytes.Equal(got[i], model[i]) {
					t.Fatalf("op %d: record %d differs", op, i)
				}
			}
			model = nil
		}
	}
}

// TestConcurrent moves records between two goroutines with blocking Write
// and Wait, checking order and content (run it with -race).
// consume reads n records of r in a goroutine of its own, checking each
// with ok (given its index), and sends nil or the first failure on the
// channel it returns.
func consume(r *Ring, n int, ok func(rec []byte, i int) bool) <-chan error {
	done := make(chan error, 1)
	go func() {
		c := r.Consumer()
		next := 0
		for next < n {
			if !c.Wait(5 * time.Second) {
				done <- fmt.Errorf("consumer starved at %d", next)
				return
			}
			var bad error
			if _, err := c.Read(func(rec []byte) {
				if bad == nil && !ok(rec, next) {
					bad = fmt.Errorf("record %d: wrong (%d bytes)", next, len(rec))
				}
				next++
			}); err != nil {
				done <- err
				return
			}
			if bad != nil {
				done <- bad
				return
			}
		}
		done <- nil
	}()
	return done
}

func TestConcurrent(t *testing.T) {
	r := newTestRing(t, 4096)
	const n = 200000
	done := consume(r, n, func(rec []byte, i int) bool {
		return len(rec) == 8+i%50 && binary.LittleEndian.Uint64(rec) == uint64(i)
	})
	p := r.Producer()
	buf := make([]byte, 64)
	for i := 0; i < n; i++ {
		rec := buf[:8+i%50]
		binary.LittleEndian.PutUint64(rec, uint64(i))
		if err := p.Write(rec, 5*time.Second); err != nil {
			select {
			case cerr := <-done:
				t.Fatalf("write %d: %v (consumer: %v)", i, err, cerr)
			default:
				t.Fatalf("write %d: %v (consumer still running)", i, err)
			}
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestIdleConsumerSleeps checks that Wait really blocks (no spinning) and
// wakes on a write.
func TestIdleConsumerSleeps(t *testing.T) {
	r := newTestRing(t, 4096)
	c := r.Consumer()
	start := time.Now()
	if c.Wait(50 * time.Millisecond) {
		t.Fatal("Wait reported records on an empty ring")
	}
	if time.Since(start) < 40*time.Millisecond {
		t.Fatal("Wait returned early on an empty ring")
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(20 * time.Millisecond)
		p := r.Producer()
		if err := p.Write([]byte("x"), time.Second); err != nil {
			t.Error(err)
		}
	}()
	if !c.Wait(5 * time.Second) {
		t.Fatal("Wait did not wake on a write")
	}
	wg.Wait()
}

// TestCorruptRegion: garbage in the shared region is reported, never a
// panic or a read outside the data area.
func TestCorruptRegion(t *testing.T) {
	r := newTestRing(t, 4096)
	p, c := r.Producer(), r.Consumer()
	_ = p.TryWrite([]byte("ok"))
	p.Flush()
	binary.LittleEndian.PutUint32(r.data[8:], 0x7fffffff) // a record claiming 2 GiB
	r.head.Store(r.head.Load() + 64)
	n, err := c.Read(func([]byte) {})
	if n != 1 || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Read = %d, %v; want the good record, then ErrCorrupt", n, err)
	}
}

func FuzzRead(f *testing.F) {
	f.Add([]byte{2, 0, 0, 0, 'o', 'k', 0, 0}, uint16(8), uint16(0))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, uint16(4096), uint16(4088))
	f.Add([]byte{0xff, 0xff, 0xff, 0x7f, 1, 2, 3}, uint16(64), uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, head, tail uint16) {
		mem := make([]byte, headerSize+4096)
		r := newRing(mem, -1, -1, -1)
		copy(r.data, data)
		t8 := uint64(tail) &^ 7
		r.tail.Store(t8)
		r.head.Store(uint64(head))
		c := r.Consumer()
		total := 0
		_, err := c.Read(func(rec []byte) { total += len(rec) })
		if err == nil && r.tail.Load() != uint64(head) {
			t.Fatalf("no error but tail %d != head %d", r.tail.Load(), head)
		}
		if total > 4096 {
			t.Fatalf("read %d bytes from a 4096-byte ring", total)
		}
	})
}

// Two processes: the test binary runs itself as the consumer.

const childEnv = "ZENCONN_SHM_CHILD"

// runChild attaches to the ring passed as fds 3, 4, 5, consumes the number
// of records given in the environment and prints their count and CRC.
func runChild() int {
	n, _ := strconv.Atoi(os.Getenv(childEnv))
	r, err := Attach(3, 4, 5)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer r.Close()
	c := r.Consumer()
	crc := crc32.NewIEEE()
	got := 0
	fmt.Println("ready")
	for got < n {
		if !c.Wait(10 * time.Second) {
			fmt.Println("error timeout at", got)
			return 1
		}
		if _, err := c.Read(func(rec []byte) { crc.Write(rec); got++ }); err != nil {
			fmt.Println("error", err)
			return 1
		}
	}
	fmt.Println("done", got, crc.Sum32())
	return 0
}

type child struct {
	cmd      *exec.Cmd
	out      *bytes.Buffer
	readDone chan struct{}
}

func startChild(t testing.TB, r *Ring, n int) *child {
	t.Helper()
	files, err := r.Files()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+strconv.Itoa(n))
	cmd.ExtraFiles = files
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = pw
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	for _, f := range files {
		f.Close()
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	ch := &child{cmd: cmd, out: new(bytes.Buffer), readDone: make(chan struct{})}
	line := make([]byte, 6)
	if _, err := pr.Read(line); err != nil || string(line) != "ready\n" {
		t.Fatalf("child did not get ready: %q %v", line, err)
	}
	go func() { _, _ = ch.out.ReadFrom(pr); pr.Close(); close(ch.readDone) }()
	return ch
}

func (c *child) wait(t testing.TB) string {
	t.Helper()
	err := c.cmd.Wait()
	<-c.readDone
	if err != nil {
		t.Fatalf("child: %v: %s", err, c.out.String())
	}
	return strings.TrimSpace(c.out.String())
}

func TestTwoProcesses(t *testing.T) {
	r := newTestRing(t, 1<<16)
	const n = 300000
	ch := startChild(t, r, n)
	p := r.Producer()
	crc := crc32.NewIEEE()
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 2048)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	for i := 0; i < n; i++ {
		rec := buf[i%1000 : i%1000+1+rng.IntN(1000)]
		crc.Write(rec)
		if err := p.Write(rec, 10*time.Second); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if got, want := ch.wait(t), fmt.Sprintf("done %d %d", n, crc.Sum32()); got != want {
		t.Fatalf("child says %q, want %q", got, want)
	}
}

// BenchmarkTwoProcesses moves records one way to a consumer process. Run
// with -benchtime=2000000x or more; it reports records per second.
func BenchmarkTwoProcesses(b *testing.B) {
	for _, size := range []int{64, 1024} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			r := newTestRing(b, 1<<20)
			ch := startChild(b, r, b.N)
			p := r.Producer()
			rec := bytes.Repeat([]byte{'r'}, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if err := p.TryWrite(rec); err != nil {
					if err := p.Write(rec, 10*time.Second); err != nil {
						b.Fatal(err)
					}
					continue
				}
				if i%64 == 63 {
					p.Flush()
				}
			}
			p.Flush()
			out := ch.wait(b)
			b.StopTimer()
			if !strings.HasPrefix(out, "done "+strconv.Itoa(b.N)+" ") {
				b.Fatalf("child: %q", out)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
		})
	}
}

func TestInterruptEndsWait(t *testing.T) {
	r := newTestRing(t, 4096)
	c := r.Consumer()
	done := make(chan bool)
	go func() { done <- c.Wait(-1) }()
	time.Sleep(20 * time.Millisecond) // let it block; the result does not depend on it
	r.Interrupt()
	select {
	case got := <-done:
		if got {
			t.Fatal("Wait reported records on an empty interrupted ring")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Interrupt did not end Wait(-1)")
	}
	if c.Wait(-1) {
		t.Fatal("a later Wait on an interrupted ring did not return false")
	}
}

// resident returns the bytes of the ring's memfd held in memory.
func resident(t *testing.T, r *Ring) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(r.memFd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// pattern fills rec with bytes that depend on i and the position.
func pattern(rec []byte, i int) []byte {
	for k := range rec {
		rec[k] = byte(i*7 + k)
	}
	return rec
}

// TestReleaseGivesPagesBack: after a lap, Release frees the pages of the
// free space, keeps what is queued intact, and the ring goes on working
// through the holes; it waits for a quarter of the ring to be written and
// for ReleaseEvery between releases.
func TestReleaseGivesPagesBack(t *testing.T) {
	const capacity = 1 << 20
	r := newTestRing(t, capacity)
	p, c := r.Producer(), r.Consumer()
	rec := make([]byte, 1000)
	i := 0
	for ; i < capacity*3/4/1008; i++ {
		if err := p.TryWrite(pattern(rec, i)); err != nil {
			t.Fatal(err)
		}
	}
	p.Flush()
	readAll(t, c)
	queued := i
	for ; i < queued+100; i++ { // ~100 KB queued, unread
		if err := p.TryWrite(pattern(rec, i)); err != nil {
			t.Fatal(err)
		}
	}
	p.Flush()
	before := resident(t, r)
	now := time.Now()
	n := p.Release(now)
	after := resident(t, r)
	t.Logf("resident %d KiB before, %d KiB after releasing %d KiB", before>>10, after>>10, n>>10)
	if n < capacity/2 || after > 128<<10+headerSize {
		t.Fatalf("released %d bytes, %d resident after; want most of the ring back and ~100 KB queued kept", n, after)
	}
	for k, got := range readAll(t, c) {
		if want := pattern(rec, queued+k); !bytes.Equal(got, want) {
			t.Fatalf("queued record %d damaged by the release", queued+k)
		}
	}
	if n := p.Release(now.Add(ReleaseEvery)); n != 0 {
		t.Fatalf("released %d bytes with nothing written since", n)
	}
	// Another lap through the holes.
	for lap := i + capacity/1008; i < lap; i++ {
		if err := p.TryWrite(pattern(rec, i)); err != nil {
			p.Flush()
			readAll(t, c)
			i--
			continue
		}
	}
	p.Flush()
	readAll(t, c)
	if n := p.Release(now.Add(ReleaseEvery / 2)); n != 0 {
		t.Fatalf("released %d bytes %v after the last release", n, ReleaseEvery/2)
	}
	if n := p.Release(now.Add(ReleaseEvery)); n == 0 {
		t.Fatal("nothing released after a lap and ReleaseEvery")
	}
}

// TestReleaseConcurrent: a consumer reading while its producer releases
// over and over never sees a damaged record.
func TestReleaseConcurrent(t *testing.T) {
	r := newTestRing(t, 64<<10)
	const n = 100000
	want := make([]byte, 600)
	done := consume(r, n, func(rec []byte, i int) bool {
		return bytes.Equal(rec, pattern(want[:100+i%500], i))
	})
	p := r.Producer()
	buf := make([]byte, 600)
	now, released := time.Now(), 0
	for i := 0; i < n; i++ {
		if err := p.Write(pattern(buf[:100+i%500], i), 5*time.Second); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if i%20 == 0 {
			now = now.Add(ReleaseEvery)
			released += p.Release(now)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if released == 0 {
		t.Fatal("nothing released")
	}
	t.Logf("%d MiB released", released>>20)
}
