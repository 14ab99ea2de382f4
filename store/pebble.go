package store

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// maxOpenFiles bounds each database's open files (its table cache holds
// 10 fewer).
const maxOpenFiles = 128

// indexMemTable is the index database's largest memtable (Pebble starts
// at 256 KiB and doubles up to it; the log database keeps the default 4
// MiB).
const indexMemTable = 16 << 20

// openDatabases opens (creating them if needed) the index and log
// databases of the store in dir.
func openDatabases(dir string, opts Options) (db, logdb *pebble.DB, err error) {
	// Pebble v2 has no CURRENT file: a marker names the manifest.
	if desc, err := pebble.Peek(dir, vfs.Default); err == nil && desc.Exists {
		return nil, nil, fmt.Errorf("store: %s holds a store of an earlier layout (one database); move it away to start a new one", dir)
	}
	if opts.ReadOnly {
		for _, sub := range []string{"index", "log"} {
			if desc, err := pebble.Peek(filepath.Join(dir, sub), vfs.Default); err != nil || !desc.Exists {
				return nil, nil, fmt.Errorf("store: no database in %s", dir)
			}
		}
	}
	db, err = openPebble(filepath.Join(dir, "index"), true, opts)
	if err != nil {
		return nil, nil, err
	}
	logdb, err = openPebble(filepath.Join(dir, "log"), false, opts)
	if err != nil {
		_ = db.Close()
		return nil, nil, err
	}
	return db, logdb, nil
}

// openPebble opens (creating if needed) one of the store's databases.
func openPebble(dir string, index bool, opts Options) (*pebble.DB, error) {
	errs := newLimitLog(opts.Log, "pebble: "+filepath.Base(dir), pebbleLogEvery)
	po := &pebble.Options{
		// An explicit FS: Pebble's default wraps it in a disk-health
		// checker whose goroutine a failed Open (folder locked) leaks, and
		// whose reports would go to a no-op listener anyway. Files are
		// not preallocated (nofalloc.go).
		FS:       noPreallocFS{vfs.Default},
		ReadOnly: opts.ReadOnly,
		Logger:   quietLogger{opts.Log, errs},
		// A flush that fails is retried at once, for ever: on a full
		// disk, one log line per pebbleLogEvery and a pause per failure
		// rather than a spinning core and a flood of log lines.
		EventListener: &pebble.EventListener{BackgroundError: func(err error) {
			errs.note("err", err)
			if isDiskFull(err) {
				time.Sleep(backgroundErrorPause)
			}
		}},
		// Pebble keeps tables open in a cache of up to MaxOpenFiles (1,000
		// by default); the node accepts connections up to the open-file
		// limit less 512, so the two databases together must stay well
		// under that.
		MaxOpenFiles: maxOpenFiles,
	}
	// No compactions just for tombstone-dense tables: the index database's
	// active-session markers are set then deleted by the thousand, and
	// such compactions rewrote its bottom level over and over, writing
	// several times what was flushed; normal compactions drop the
	// tombstones anyway (bench/notes/churn.md).
	po.Experimental.TombstoneDenseCompactionThreshold = -1
	if index {
		// The index database's keys (channel and user indexes) do not
		// grow with time, so every flushed table overlaps the ones before
		// and L0 compactions rewrite them. A larger memtable and more L0
		// tables before a compaction rewrite each entry fewer times
		// (BenchmarkChurnCycle and the churn scenario's profile:
		// bench/notes/churn.md).
		po.MemTableSize = indexMemTable
		po.L0CompactionThreshold = 8
		po.L0StopWritesThreshold = 32
	}
	db, err := pebble.Open(dir, po)
	if err != nil {
		if isLockErr(err) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("store: opening %s: %w", dir, err)
	}
	return db, nil
}

func isLockErr(err error) bool {
	// Pebble reports a lock held by another Store of this process with a
	// plain error of its own.
	return errors.Is(err, syscall.EAGAIN) || strings.Contains(err.Error(), "resource temporarily unavailable") ||
		strings.Contains(err.Error(), "lock held by current process")
}

// pebbleLogEvery is how often Pebble's errors are logged at most (with
// the number since the last line); backgroundErrorPause is how long a
// background job that failed on a full disk waits before it is retried.
const (
	pebbleLogEvery       = 10 * time.Second
	backgroundErrorPause = 100 * time.Millisecond
)

// quietLogger sends Pebble's informational chatter to debug level and
// its errors to a rate-limited log.
type quietLogger struct {
	log  *slog.Logger
	errs *limitLog
}

func (l quietLogger) Infof(format string, args ...any) {
	l.log.Debug("pebble: " + fmt.Sprintf(format, args...))
}
func (l quietLogger) Errorf(format string, args ...any) {
	l.errs.note("err", fmt.Sprintf(format, args...))
}
func (l quietLogger) Fatalf(format string, args ...any) {
	l.log.Error("pebble: " + fmt.Sprintf(format, args...))
	os.Exit(1)
}
