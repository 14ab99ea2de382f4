package engine

import (
	"context"
	"net"
	"os"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// yielder lets work on a gnet loop continue after the loop has served the
// sockets that are ready (Executor.Yield). gnet runs the tasks queued while
// its tasks run in the same round, before any I/O, so a long pass that
// queued its rest as a task would keep the loop from reading for as long
// as the whole pass takes (tens of seconds for a fan-out to 18,000
// subscribers on a loaded machine): the publishes, pongs and new
// connections of its clients would wait. Instead the rest waits for a byte
// on a socket pair whose other end is registered on the loop like a
// connection: it runs as that socket's traffic, in turn with the loop's
// other ready sockets.
type yielder struct {
	w     int      // the end written, non-blocking; -1 once closed
	next  []func() // what runs on the next wake-up
	spare []func() // next's other array: a wake-up allocates nothing
	ready bool     // the other end is registered on the loop
}

// newYielder makes a yielder for el and registers its read end there; it
// is ready once gnet has opened that end (OnOpen, on el).
func newYielder(el gnet.EventLoop) (*yielder, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fds[1]), "yield")
	nc, err := net.FileConn(f) // a copy of the descriptor
	f.Close()
	if err != nil {
		unix.Close(fds[0])
		return nil, err
	}
	y := &yielder{w: fds[0]}
	// gnet registers a copy of nc's descriptor and closes nc.
	if _, err := el.Enroll(gnet.NewContext(context.Background(), y), nc); err != nil {
		nc.Close()
		unix.Close(fds[0])
		return nil, err
	}
	return y, nil
}

// yield queues fn for the loop's next wake-up through the socket pair. It
// reports false when the pair is not (or no longer) registered.
func (y *yielder) yield(fn func()) bool {
	if y == nil || !y.ready || y.w < 0 {
		return false
	}
	if len(y.next) == 0 {
		if _, err := unix.Write(y.w, []byte{1}); err != nil && err != unix.EAGAIN {
			return false
		}
	}
	y.next = append(y.next, fn)
	return true
}

// traffic runs, on the loop, what was queued before the wake-up.
func (y *yielder) traffic(c gnet.Conn) {
	_, _ = c.Discard(-1)
	y.run()
}

// run runs what was queued; what that queues waits for the next wake-up.
func (y *yielder) run() {
	fns := y.next
	y.next = y.spare[:0]
	for i, fn := range fns {
		fn()
		fns[i] = nil
	}
	y.spare = fns[:0]
}

// closed runs, on the loop, what was still queued when gnet closed the
// read end (the engine stops): later yields fall back to Execute.
func (y *yielder) closed() {
	y.ready = false
	y.run()
}

// close closes the written end (gnet closes the other with the loop).
func (y *yielder) close() {
	if y.w >= 0 {
		unix.Close(y.w)
		y.w = -1
	}
}
