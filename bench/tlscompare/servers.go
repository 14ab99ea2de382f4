package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"reflect"
	"unsafe"

	lltls "github.com/lesismal/llib/std/crypto/tls"
)

// server is the server side of one TLS connection under test.
type server interface {
	// serve runs the handshake and reads one request of n bytes, then
	// writes the reply, all over w.
	serve(w *wire, n int, reply []byte) error
	// write encrypts p as one record.
	write(p []byte) error
}

type kind struct {
	name string
	make func(std *tls.Config, ll *lltls.Config) server
}

var kinds = []kind{
	{"crypto/tls", func(std *tls.Config, _ *lltls.Config) server { return &stdServer{cfg: std} }},
	{"crypto/tls+zenconn", func(std *tls.Config, _ *lltls.Config) server { return &stdServer{cfg: std, reduced: true} }},
	{"llib", func(_ *tls.Config, ll *lltls.Config) server { return &llibServer{cfg: ll} }},
}

// stdServer is crypto/tls as ZenConn drives it before (copy-all reads)
// or with its reductions (reads bounded to a record, rawInput, input and
// hand released once read: engine/tlsbufs.go).
type stdServer struct {
	cfg     *tls.Config
	reduced bool
	c       *tls.Conn
}

func (s *stdServer) serve(w *wire, n int, reply []byte) error {
	w.bounded = s.reduced
	s.c = tls.Server(w, s.cfg)
	if err := s.c.Handshake(); err != nil {
		return err
	}
	if _, err := io.ReadFull(s.c, make([]byte, n)); err != nil {
		return err
	}
	if _, err := s.c.Write(reply); err != nil {
		return err
	}
	if s.reduced {
		release(s.c)
	}
	return nil
}

func (s *stdServer) write(p []byte) error { _, err := s.c.Write(p); return err }

var rawInputOff, inputOff, handOff = fieldOffsets()

func fieldOffsets() (raw, in, hand uintptr) {
	t := reflect.TypeFor[tls.Conn]()
	r, ok1 := t.FieldByName("rawInput")
	i, ok2 := t.FieldByName("input")
	h, ok3 := t.FieldByName("hand")
	if !ok1 || !ok2 || !ok3 || r.Type != reflect.TypeFor[bytes.Buffer]() ||
		i.Type != reflect.TypeFor[bytes.Reader]() || h.Type != reflect.TypeFor[bytes.Buffer]() {
		panic("crypto/tls's rawInput, input and hand are not where expected")
	}
	return r.Offset, i.Offset, h.Offset
}

// release empties crypto/tls's input buffers as engine/tlsbufs.go does.
func release(c *tls.Conn) {
	p := unsafe.Pointer(c)
	raw := (*bytes.Buffer)(unsafe.Add(p, rawInputOff))
	in := (*bytes.Reader)(unsafe.Add(p, inputOff))
	hand := (*bytes.Buffer)(unsafe.Add(p, handOff))
	if raw.Len() == 0 && in.Len() == 0 && hand.Len() == 0 {
		*raw, *in, *hand = bytes.Buffer{}, bytes.Reader{}, bytes.Buffer{}
	}
}

// llibServer is llib's non-blocking Conn as nbio drives it: what the
// socket gives is Appended, then Read until it has nothing more.
type llibServer struct {
	cfg *lltls.Config
	c   *lltls.Conn
}

var errShort = errors.New("llib: connection ended before the request")

func (s *llibServer) serve(w *wire, n int, reply []byte) error {
	s.c = lltls.NewConn(w, s.cfg, false, true)
	buf, got := make([]byte, 16<<10), 0
	for got < n {
		b, ok := <-w.in
		if !ok {
			return errShort
		}
		if _, err := s.c.Append(b); err != nil {
			return err
		}
		for {
			k, err := s.c.Read(buf)
			if err != nil {
				return err
			}
			if k == 0 {
				break
			}
			got += k
		}
	}
	_, err := s.c.Write(reply)
	return err
}

func (s *llibServer) write(p []byte) error { _, err := s.c.Write(p); return err }
