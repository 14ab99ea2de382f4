package agent

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/zenconn/server/link"
	"github.com/zenconn/server/nodemsg"
	"github.com/zenconn/server/store"
)

// TestTicketsFirstAndRotated: the first record a worker gets is the node's
// session-ticket keys; each rotation sends them again with a new key
// first and the previous keys after it, up to TicketKeys of them.
func TestTicketsFirstAndRotated(t *testing.T) {
	var got [][][nodemsg.TicketKeySize]byte
	cfg := Config{
		Workers: 1, Loops: 1, Node: "n1", RingSize: 1 << 20,
		Socket:         filepath.Join(t.TempDir(), "agent.sock"),
		TicketRotation: 20 * time.Millisecond, TicketKeys: 3,
		InProcess: func(ctx context.Context, id int, rings *link.Rings) error {
			from := rings.FromAgent().Consumer()
			deadline := time.Now().Add(10 * time.Second)
			var m nodemsg.Msg
			for len(got) < 5 && time.Now().Before(deadline) {
				from.Wait(100 * time.Millisecond)
				_, _ = from.Read(func(rec []byte) {
					if err := nodemsg.Decode(rec, &m); err != nil || m.Kind != nodemsg.KindTickets {
						t.Errorf("record %x from the agent: %v, want only Tickets", rec, err)
						return
					}
					got = append(got, nodemsg.TicketKeys(m.Data))
				})
			}
			return errScriptDone
		},
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Run(ctx); !errors.Is(err, errScriptDone) {
		t.Fatalf("Run: %v", err)
	}
	if len(got) < 5 {
		t.Fatalf("%d Tickets records, want 5", len(got))
	}
	if len(got[0]) != 1 {
		t.Fatalf("first record holds %d keys, want 1", len(got[0]))
	}
	for i := 1; i < len(got); i++ {
		if want := min(i+1, 3); len(got[i]) != want {
			t.Fatalf("record %d holds %d keys, want %d", i, len(got[i]), want)
		}
		if got[i][0] == got[i-1][0] {
			t.Fatalf("record %d: no new key", i)
		}
		for j := 1; j < len(got[i]); j++ {
			if got[i][j] != got[i-1][j-1] {
				t.Fatalf("record %d: key %d is not the previous record's key %d", i, j, j-1)
			}
		}
	}
}

// TestSessionRecordsTLS: the TLS version and cipher of an Opened record
// become the session's scheme, version and cipher names, and the connect
// record's; a plain connection's are ws and empty.
func TestSessionRecordsTLS(t *testing.T) {
	st := openStore(t, store.SyncBatch)
	want := map[string][3]string{
		"c1": {"wss", "TLS 1.3", "TLS_AES_128_GCM_SHA256"},
		"c2": {"wss", "TLS 1.2", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"},
		"c3": {"ws", "", ""},
	}
	_, err := runAgent(t, st, false, func(w *fakeWorker, a *Agent) error {
		w.send(t, nodemsg.AppendOpened(nil, "c1", "", "127.0.0.1:5000", "", "json", 0x0304, 0x1301))
		w.send(t, nodemsg.AppendOpened(nil, "c2", "", "127.0.0.1:5001", "", "bin", 0x0303, 0xc02b))
		w.send(t, nodemsg.AppendOpened(nil, "c3", "", "127.0.0.1:5002", "", "json", 0, 0))
		// Read through the API, which settles the rings first.
		var page struct {
			Sessions []store.Session `json:"sessions"`
			Records  []store.Record  `json:"records"`
		}
		for _, path := range []string{"/api/sessions", "/api/audit?op=connect"} {
			rec := httptest.NewRecorder()
			a.apiHandler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
			if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil {
				t.Errorf("%s: %q: %v", path, rec.Body.String(), err)
			}
		}
		if len(page.Sessions) != 3 || len(page.Records) != 3 {
			t.Errorf("sessions %+v, connect records %+v; want 3 of each", page.Sessions, page.Records)
		}
		for _, s := range page.Sessions {
			if got := [3]string{s.Scheme, s.TLSVersion, s.TLSCipher}; got != want[s.Conn] {
				t.Errorf("session %s: %q, want %q", s.Conn, got, want[s.Conn])
			}
		}
		for _, r := range page.Records {
			if got := [3]string{r.Scheme, r.TLSVersion, r.TLSCipher}; got != want[r.Conn] {
				t.Errorf("connect record of %s: %q, want %q", r.Conn, got, want[r.Conn])
			}
		}
		return errScriptDone
	})
	if !errors.Is(err, errScriptDone) {
		t.Fatalf("Run: %v", err)
	}
}
