// Package accesslog writes access-log lines off the event loops.
//
// Loops hand finished lines to a Writer, which appends them to an in-memory
// buffer under a short lock; a background goroutine writes that buffer to
// the file every FlushInterval and on Close. Reopen (on SIGUSR1) closes and
// reopens the file by name, for logrotate. When the disk falls behind and
// the buffer reaches MaxBuffered, further lines are counted in Dropped rather
// than blocking a loop.
//
// A Writer is safe for concurrent use.
package accesslog

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// FlushInterval is how often buffered lines reach the file.
	FlushInterval = 200 * time.Millisecond
	// MaxBuffered bounds the bytes waiting for the file.
	MaxBuffered = 16 << 20
)

// Writer is a buffered access-log file.
type Writer struct {
	path string // "" for stdout

	mu      sync.Mutex
	buf     []byte
	spare   []byte
	dropped atomic.Uint64

	fileMu sync.Mutex // guards out and file across flush and reopen
	out    io.Writer
	file   *os.File

	stop chan struct{}
	done chan struct{}
}

// Open opens path for appending ("-" means standard output), creating it
// with mode 0600 (it holds clients' addresses and requests), and starts
// the flusher.
func Open(path string) (*Writer, error) {
	w := &Writer{stop: make(chan struct{}), done: make(chan struct{})}
	if path == "-" {
		w.out = os.Stdout
	} else {
		w.path = path
		if err := w.openFile(); err != nil {
			return nil, err
		}
	}
	go w.run()
	return w, nil
}

func (w *Writer) openFile() error {
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("accesslog: %w", err)
	}
	w.file, w.out = f, f
	return nil
}

// WriteLine queues one line (which must end in a newline). It never blocks
// on I/O and does not retain line.
func (w *Writer) WriteLine(line []byte) {
	w.mu.Lock()
	if len(w.buf)+len(line) > MaxBuffered {
		w.mu.Unlock()
		w.dropped.Add(1)
		return
	}
	w.buf = append(w.buf, line...)
	w.mu.Unlock()
}

// Dropped returns the number of lines lost because the file fell behind.
func (w *Writer) Dropped() uint64 { return w.dropped.Load() }

// Flush writes everything queued so far.
func (w *Writer) Flush() error {
	w.mu.Lock()
	b := w.buf
	w.buf = w.spare[:0]
	w.mu.Unlock()
	var err error
	if len(b) > 0 {
		w.fileMu.Lock()
		_, err = w.out.Write(b)
		w.fileMu.Unlock()
	}
	w.mu.Lock()
	if cap(b) <= 1<<20 {
		w.spare = b[:0]
	} else {
		w.spare = nil
	}
	w.mu.Unlock()
	if err != nil {
		return fmt.Errorf("accesslog: write: %w", err)
	}
	return nil
}

// Reopen flushes, then closes and reopens the file by its path, so that a
// rotated file is released. It does nothing for standard output.
func (w *Writer) Reopen() error {
	if w.path == "" {
		return nil
	}
	ferr := w.Flush()
	w.fileMu.Lock()
	defer w.fileMu.Unlock()
	old := w.file
	if err := w.openFile(); err != nil {
		return err
	}
	if err := old.Close(); err != nil && ferr == nil {
		ferr = fmt.Errorf("accesslog: close: %w", err)
	}
	return ferr
}

// Close flushes and stops the writer; the file is closed.
func (w *Writer) Close() error {
	close(w.stop)
	<-w.done
	err := w.Flush()
	if w.file != nil {
		if cerr := w.file.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("accesslog: close: %w", cerr)
		}
	}
	return err
}

func (w *Writer) run() {
	defer close(w.done)
	t := time.NewTicker(FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			_ = w.Flush()
		case <-w.stop:
			return
		}
	}
}
