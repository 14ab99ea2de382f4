package engine

import (
	"context"
	"errors"
	"sync"
	"unsafe"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// writeWatcher tells gnet connections when their socket is writable again
// after a write the kernel did not take whole (gnetConn.Writev keeps
// nothing, and gnet has no "writable" callback for the application). It
// is an epoll instance of its own: a connection's socket is added with
// EPOLLOUT|EPOLLONESHOT when it waits, and one goroutine turns each event
// into a task on the connection's loop. The socket stays in gnet's epoll
// for everything else; closing it removes it from both.
type writeWatcher struct {
	epfd, stopfd int
	done         chan struct{}
	stopOnce     sync.Once

	mu      sync.Mutex
	waiting map[int]*writeWait // by socket fd
}

// writeWait is one connection known to the watcher, from its first wait
// until it closes.
type writeWait struct {
	gc    *gnetConn
	el    gnet.EventLoop
	run   runFunc // the task run on el when the socket is writable
	added bool    // in the epoll set (later waits re-arm it)
}

func newWriteWatcher() (*writeWatcher, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	stopfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(stopfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, stopfd, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(stopfd)
		return nil, err
	}
	w := &writeWatcher{epfd: epfd, stopfd: stopfd, done: make(chan struct{}), waiting: make(map[int]*writeWait)}
	go w.loop()
	return w, nil
}

func (w *writeWatcher) loop() {
	defer close(w.done)
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(w.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == w.stopfd {
				return
			}
			w.mu.Lock()
			ww := w.waiting[fd]
			w.mu.Unlock()
			if ww != nil {
				// A stale event (the socket closed, or its fd reused by a
				// connection that waits too) only costs a useless try.
				_ = ww.el.Execute(context.Background(), ww.run)
			}
		}
	}
}

// wait arms the watcher for gc's socket. It runs on gc's loop.
func (w *writeWatcher) wait(gc *gnetConn) {
	fd := gc.c.Fd()
	w.mu.Lock()
	ww := w.waiting[fd]
	if ww == nil || ww.gc != gc {
		ww = &writeWait{gc: gc, el: gc.c.EventLoop()}
		ww.run = runFunc(gc.writable)
		w.waiting[fd] = ww
	}
	w.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLOUT | unix.EPOLLONESHOT, Fd: int32(fd)}
	op := unix.EPOLL_CTL_MOD
	if !ww.added {
		op = unix.EPOLL_CTL_ADD
	}
	err := unix.EpollCtl(w.epfd, op, fd, &ev)
	switch {
	case err == nil:
	case errors.Is(err, unix.EEXIST):
		err = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
	case errors.Is(err, unix.ENOENT):
		err = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
	}
	ww.added = err == nil
	if err != nil {
		// Without the watcher the queue would wait forever: end it.
		gc.Close()
	}
}

// forget drops gc's socket before it is closed. It runs on gc's loop.
func (w *writeWatcher) forget(gc *gnetConn) {
	fd := gc.c.Fd()
	w.mu.Lock()
	if ww := w.waiting[fd]; ww != nil && ww.gc == gc {
		delete(w.waiting, fd)
		if ww.added {
			_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		}
	}
	w.mu.Unlock()
}

// stop ends the watcher's goroutine and closes its descriptors.
func (w *writeWatcher) stop() {
	w.stopOnce.Do(func() {
		var one [8]byte
		one[0] = 1
		_, _ = unix.Write(w.stopfd, one[:])
		<-w.done
		_ = unix.Close(w.epfd)
		_ = unix.Close(w.stopfd)
	})
}

// Writev writes with one raw writev(2) (write(2) for one piece) what the
// kernel takes of iov, and keeps nothing.
func (t *gnetConn) Writev(iov [][]byte) (int, error) {
	if t.c.OutboundBuffered() > 0 {
		return 0, nil
	}
	if len(iov) == 1 {
		return t.write(iov[0])
	}
	var vecs [maxIov]unix.Iovec
	n := 0
	for _, p := range iov {
		if len(p) == 0 {
			continue
		}
		if n == len(vecs) {
			break
		}
		vecs[n].Base = &p[0]
		vecs[n].SetLen(len(p))
		n++
	}
	switch n {
	case 0:
		return 0, nil
	case 1:
		return t.write(unsafe.Slice(vecs[0].Base, vecs[0].Len))
	}
	r, _, errno := unix.RawSyscall(unix.SYS_WRITEV, uintptr(t.c.Fd()), uintptr(unsafe.Pointer(&vecs[0])), uintptr(n))
	return t.written(r, errno)
}

// write is Writev for one piece: one raw write(2).
func (t *gnetConn) write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(t.c.Fd()), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return t.written(r, errno)
}

// written is the result of a raw write(2) or writev(2) of r bytes: EAGAIN
// is nothing written, any other error closes the connection.
func (t *gnetConn) written(r uintptr, errno unix.Errno) (int, error) {
	switch errno {
	case 0:
		return int(r), nil
	case unix.EAGAIN:
		return 0, nil
	default:
		t.Close()
		return 0, errno
	}
}

// WaitWritable arms the server's write watcher for this connection.
func (t *gnetConn) WaitWritable() {
	t.waited = true
	t.w.wait(t)
}

// writable runs on the loop when the watcher saw the socket writable:
// gnet's own buffer (bytes given to Write) goes first, then the engine's
// queue.
func (t *gnetConn) writable() {
	if t.gone {
		return
	}
	if t.c.OutboundBuffered() > 0 {
		_ = t.c.Flush()
		if t.gone {
			return
		}
		if t.c.OutboundBuffered() > 0 {
			t.w.wait(t)
			return
		}
	}
	if conn, ok := t.c.Context().(*Conn); ok {
		conn.Writable()
	}
}
