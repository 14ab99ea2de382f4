package store

import (
	"log/slog"
	"sync"
	"time"
)

// limitLog writes one log line per interval for a limit reached over and
// over: the first time at once, then at most once per interval with the
// number of times since the last line. Safe for concurrent use.
type limitLog struct {
	log      *slog.Logger
	msg      string
	interval time.Duration

	mu     sync.Mutex
	last   time.Time // when the last line was written
	unsaid int       // events since then
}

func newLimitLog(log *slog.Logger, msg string, interval time.Duration) *limitLog {
	return &limitLog{log: log, msg: msg, interval: interval}
}

// note counts one event and logs it (with args) when a line is due.
func (l *limitLog) note(args ...any) {
	l.mu.Lock()
	l.unsaid++
	now := time.Now()
	if !l.last.IsZero() && now.Sub(l.last) < l.interval {
		l.mu.Unlock()
		return
	}
	n := l.unsaid
	l.unsaid, l.last = 0, now
	l.mu.Unlock()
	l.log.Warn(l.msg, append(args, "times", n)...)
}
