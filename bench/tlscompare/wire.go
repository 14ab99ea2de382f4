package main

import (
	"errors"
	"net"
	"time"
)

// wire is one end of an in-memory connection: Read takes what the other
// end wrote (blocking, whatever one Write sent, up to len(p)), Write sends
// a copy to the other end, or counts it when sink is set.
type wire struct {
	in, out chan []byte
	pending []byte
	// bounded makes Read stop at the end of the TLS record being read, as
	// ZenConn's adapter does (engine/tls.go tlsWire); left is what remains
	// of that record.
	bounded bool
	left    int
	sink    bool
	sent    int
}

var errDetached = errors.New("wire detached")

func newDuplex() (a, b *wire) {
	ab, ba := make(chan []byte, 64), make(chan []byte, 64)
	return &wire{in: ba, out: ab}, &wire{in: ab, out: ba}
}

func (w *wire) Read(p []byte) (int, error) {
	for len(w.pending) == 0 {
		if w.in == nil {
			return 0, errDetached
		}
		b, ok := <-w.in
		if !ok {
			return 0, net.ErrClosed
		}
		w.pending = b
	}
	n := len(p)
	if w.bounded {
		if w.left == 0 {
			for len(w.pending) < 5 { // a header split across writes
				b, ok := <-w.in
				if !ok {
					return 0, net.ErrClosed
				}
				w.pending = append(w.pending, b...)
			}
			w.left = 5 + (int(w.pending[3])<<8 | int(w.pending[4]))
		}
		n = min(n, w.left)
	}
	n = copy(p[:n], w.pending)
	w.pending = w.pending[n:]
	if w.bounded {
		w.left -= n
	}
	return n, nil
}

func (w *wire) Write(p []byte) (int, error) {
	if w.sink {
		w.sent += len(p)
		return len(p), nil
	}
	if w.out == nil {
		return 0, errDetached
	}
	w.out <- append([]byte(nil), p...)
	return len(p), nil
}

// detach drops the channels, so that nothing of the other end stays
// reachable from this one.
func (w *wire) detach() { w.in, w.out, w.pending = nil, nil, nil }

func (w *wire) Close() error                     { return nil }
func (w *wire) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443} }
func (w *wire) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000} }
func (w *wire) SetDeadline(time.Time) error      { return nil }
func (w *wire) SetReadDeadline(time.Time) error  { return nil }
func (w *wire) SetWriteDeadline(time.Time) error { return nil }
