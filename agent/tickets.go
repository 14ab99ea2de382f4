package agent

import (
	"crypto/rand"
	"sync"
	"time"

	"github.com/zenconn/server/nodemsg"
)

// TLS session-ticket keys (package doc, "Session tickets").
const (
	// DefaultTicketRotation is how often the agent makes a new key.
	DefaultTicketRotation = time.Hour
	// DefaultTicketKeys is how many keys the workers hold: the newest
	// and the 24 before it, so a ticket opens for 24 rotations after the
	// one that sealed it (24 h to 25 h by default).
	DefaultTicketKeys = 25
)

// tickets holds the node's session-ticket keys, the newest first.
type tickets struct {
	mu   sync.Mutex
	keys [][nodemsg.TicketKeySize]byte
	max  int
}

// rotateLocked adds a new random key and drops the oldest beyond max; it
// returns the Tickets record of the keys. Called under t.mu.
func (t *tickets) rotateLocked() []byte {
	var k [nodemsg.TicketKeySize]byte
	_, _ = rand.Read(k[:]) // never fails (crypto/rand)
	t.keys = append([][nodemsg.TicketKeySize]byte{k}, t.keys[:min(len(t.keys), t.max-1)]...)
	return nodemsg.AppendTickets(nil, t.keys)
}

// ticketsFirst queues the node's keys on a new worker process's outbox
// and only then publishes the outbox, under the keys' lock: the keys are
// the process's first record, and a rotation reaches either this record
// or the published outbox.
func (a *Agent) ticketsFirst(s *slot, out *outbox) {
	a.tickets.mu.Lock()
	defer a.tickets.mu.Unlock()
	if len(a.tickets.keys) == 0 {
		a.tickets.rotateLocked()
	}
	_ = out.enqueue(nodemsg.AppendTickets(nil, a.tickets.keys))
	s.out.Store(out)
}

// rotateTickets makes a new key every TicketRotation until done is closed
// and sends the keys to every running worker.
func (a *Agent) rotateTickets(done <-chan struct{}) {
	t := time.NewTicker(a.cfg.TicketRotation)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			a.tickets.mu.Lock()
			rec := a.tickets.rotateLocked()
			n := len(a.tickets.keys)
			for _, s := range a.slots {
				a.send(s, rec)
			}
			a.tickets.mu.Unlock()
			a.log.Debug("TLS session-ticket keys rotated", "keys", n)
		case <-done:
			return
		}
	}
}
