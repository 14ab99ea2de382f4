package store

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"
)

// ErrDiskFull is the writer's error while the data folder's filesystem
// has less free space than Options.DiskReserve.
var ErrDiskFull = errors.New("store: the disk is full")

// Free space and the writer's pause on a full disk. The writer commits a
// group only when the filesystem keeps more than the reserve free after
// it, so that Pebble never meets a full disk: a write-ahead log write that
// fails is fatal to Pebble (it exits the process), a memtable flush that
// fails is retried at once, for ever, and the reserve leaves room for
// flushes, compactions and the manifest.
// When the disk is full (below the reserve, or a commit failed with
// ENOSPC or EDQUOT) the writer keeps its group and tries again after a
// pause that doubles from pauseMin to pauseMax; the queue fills behind it
// and Append blocks (backpressure: the workers refuse publishes as
// overloaded), and no record is settled, so nothing waiting for its
// commit is acknowledged. It resumes at the first try after space
// returns. One line is logged when it starts, one per fullLogEvery while
// it lasts, one when it ends.
const (
	pauseMin       = 10 * time.Millisecond
	pauseMax       = time.Second
	fullLogEvery   = 10 * time.Second
	defaultReserve = 64 << 20
)

// statfs returns the free (for unprivileged users) and total bytes of
// dir's filesystem.
func statfs(dir string) (free, total int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("store: statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}

// diskSpace is the writer's view of the free space.
type diskSpace struct {
	dir     string
	reserve int64
}

// room returns ErrDiskFull when writing n more bytes would leave less
// than the reserve free. It reads the free space every time (a statfs, a
// microsecond or two a group): an estimate kept between reads would miss
// what other writers took meanwhile, and a write-ahead log write that
// meets a full disk is fatal to Pebble.
func (d *diskSpace) room(n int64) error {
	free, _, err := statfs(d.dir)
	if err != nil {
		return nil // cannot tell: let the commit say
	}
	if free-n < d.reserve {
		return fmt.Errorf("%w (%d bytes free, %d to write, %d reserved)", ErrDiskFull, free, n, d.reserve)
	}
	return nil
}

// isDiskFull reports whether err says the disk (or the user's disk
// quota) is full.
func isDiskFull(err error) bool {
	return errors.Is(err, ErrDiskFull) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		strings.Contains(err.Error(), "no space left on device") || strings.Contains(err.Error(), "disk quota exceeded")
}

// commitGroup builds and commits the group's batches, and while the disk
// is full keeps the group and tries again after a pause. It returns the
// commit's error: nil, an error other than a full disk, or the full disk's
// when the store closes meanwhile.
func (w *writer) commitGroup() error {
	s := w.s
	pause := pauseMin
	var since time.Time
	closing := false
	for {
		lb, b := w.build()
		err := w.space.room(int64(lb.Len() + b.Len()))
		if err == nil {
			err = w.commit(lb, b)
		} else {
			_ = lb.Close()
			_ = b.Close()
		}
		if err == nil || !isDiskFull(err) || closing {
			if !since.IsZero() {
				s.m.paused.Store(false)
				s.m.diskFull.Set(0)
				s.log.Info("audit log resumed: the disk has room again", "paused", time.Since(since).Round(time.Millisecond))
			}
			return err
		}
		if since.IsZero() {
			since = time.Now()
			s.m.paused.Store(true)
			s.m.diskFull.Set(1)
		}
		s.m.fullPauses.Inc()
		s.fullLog.note("records", len(w.g.records), "since", since.UTC().Format(time.RFC3339), "err", err)
		select {
		case <-time.After(pause):
		case <-s.stop:
			closing = true // one more try, then give up
		}
		pause = min(pause*2, pauseMax)
	}
}
