package e2e

import (
	"crypto/tls"
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// resumeDial opens a wss:// connection with cfg (its ClientSessionCache
// holds the client's tickets) and returns its TLS state and the worker
// that took it (connection ids count in steps of 64 from the worker's id).
func resumeDial(s *serverProc, cfg *tls.Config) (tls.ConnectionState, int, error) {
	d := websocket.Dialer{HandshakeTimeout: defaultTimeout, TLSClientConfig: cfg}
	c, _, err := d.Dial("wss://"+s.Addr+"/ws", nil)
	if err != nil {
		return tls.ConnectionState{}, 0, err
	}
	defer c.Close()
	wc := &wsClient{c: c}
	// Reading the welcome also reads the tickets a TLS 1.3 server sends
	// after its handshake.
	w, err := wc.readE(defaultTimeout)
	if err != nil || w.Op != "welcome" {
		return tls.ConnectionState{}, 0, fmt.Errorf("welcome %v: %v", w, err)
	}
	seq, err := strconv.ParseUint(w.Conn, 36, 64)
	if err != nil {
		return tls.ConnectionState{}, 0, fmt.Errorf("connection id %q: %v", w.Conn, err)
	}
	tc, ok := c.UnderlyingConn().(*tls.Conn)
	if !ok {
		return tls.ConnectionState{}, 0, fmt.Errorf("not a TLS connection: %T", c.UnderlyingConn())
	}
	return tc.ConnectionState(), int(seq % 64), nil
}

// checkResumes makes n new connections with cfg, all of which must resume
// the TLS session (with TLS version v) and be spread over both workers.
func checkResumes(t *testing.T, s *serverProc, cfg *tls.Config, v uint16, n int) {
	t.Helper()
	byWorker := map[int]int{}
	full := 0
	for range n {
		st, w, err := resumeDial(s, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if st.Version != v {
			t.Fatalf("TLS version %x, want %x", st.Version, v)
		}
		if !st.DidResume {
			full++
		}
		byWorker[w]++
	}
	if full > 0 {
		t.Fatalf("%s: %d of %d new connections did a full handshake (connections by worker: %v); want every one resumed",
			tls.VersionName(v), full, n, byWorker)
	}
	if len(byWorker) != 2 {
		t.Fatalf("%s: connections by worker %v: want both workers", tls.VersionName(v), byWorker)
	}
}

// TestTLSResumeAcrossWorkers runs the real binary with two worker
// processes: a client that caches its sessions resumes them on every new
// connection, TLS 1.2 (session tickets) and TLS 1.3 (PSK), whichever
// worker takes it, since the agent gives every worker the same ticket
// keys; a worker killed and restarted gets them too.
func TestTLSResumeAcrossWorkers(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	flags, client := tlsFiles(t, root)
	s := startServerWith(t, root, nil, nil, client, append(flags, "--workers", "2", "--api-key", ibAPIKey)...)
	eventually(t, 5*time.Second, func() string {
		for _, w := range wkWorkers(t, s) {
			if !w.Up {
				return "a worker is not up yet"
			}
		}
		return ""
	})
	const n = 24 // all on one worker: 1 chance in 2^23
	caches := map[uint16]*tls.Config{}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cfg := client.Clone()
		cfg.MinVersion, cfg.MaxVersion = v, v
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
		caches[v] = cfg
		st, _, err := resumeDial(s, cfg)
		if err != nil || st.DidResume {
			t.Fatalf("first connection: resumed %v, %v; want a full handshake", st.DidResume, err)
		}
		checkResumes(t, s, cfg, v, n)
	}

	// A restarted worker gets the node's keys: the tickets cached before
	// still resume on both workers.
	before := wkWorkers(t, s)[0]
	if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, func() string {
		ws, err := wkWorkersE(s) // the killed worker's connections reset
		if err != nil {
			return err.Error()
		}
		if w := ws[0]; !w.Up || w.PID == before.PID {
			return fmt.Sprintf("worker 0 not restarted yet: %+v", ws[0])
		}
		return ""
	})
	for v, cfg := range caches {
		checkResumes(t, s, cfg, v, n)
	}
}
