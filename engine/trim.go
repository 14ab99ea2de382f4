package engine

import (
	"time"

	"github.com/zenconn/server/internal/memtrim"
)

// trimMemory gives the process's free memory back to the operating system
// once a burst of allocation (a connection storm, TLS handshakes) is over
// (internal/memtrim), so that idle connections are not charged the
// garbage of their arrival.
func (s *Server) trimMemory() {
	defer s.jobsWG.Done()
	t := memtrim.New()
	t.Count = func() uint64 { return uint64(max(s.openConnections(), 0)) }
	t.Run(s.done, time.Second, func(trims uint64) {
		s.log.Debug("free memory returned to the operating system after a burst", "trims", trims)
	})
}
