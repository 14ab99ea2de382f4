package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// TLS for wss:// URLs. The epoll client speaks WebSocket on raw
// descriptors; crypto/tls needs a net.Conn. So a wss:// connection is a
// socketpair: the client keeps one end in its epoll set exactly as it keeps
// a TCP socket, and a bridge (two goroutines) carries the bytes between the
// other end and a crypto/tls connection to the server. The client's code
// paths (upgrade, frames, pings, closes) stay the same for ws:// and wss://;
// the bridge costs the generator a goroutine pair and one extra copy per
// direction, on the generator's own CPU (the server's figures are the
// server's alone).

// tlsClientConfig returns the client configuration for --tls-ca (a PEM file
// of trusted roots; empty: the system's) and --tls-server-name (empty: the
// URL's host). The certificate is always verified.
func tlsClientConfig(caFile, serverName string) (*tls.Config, error) {
	// X25519 first, then P-256, for every server alike: Go's default would
	// offer the X25519MLKEM768 hybrid, which Go servers accept and nginx
	// on OpenSSL 3.0 does not, so the servers would not do the same work.
	cfg := &tls.Config{ServerName: serverName, NextProtos: []string{"http/1.1"},
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256}}
	if caFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca: no PEM certificate in %s", caFile)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// tlsBridge is the bridge of one wss:// connection: the TCP connection to
// the server (read through a recordReader), its crypto/tls client, the
// bridge's end of the socketpair; handshook is closed once the handshake
// succeeded (ok) or failed, finished once both copying goroutines have
// returned.
type tlsBridge struct {
	raw       *net.TCPConn
	rr        *recordReader
	tc        *tls.Conn
	local     net.Conn
	ok        bool
	detaching atomic.Bool
	dropped   atomic.Bool // server plaintext the client's end did not take
	handshook chan struct{}
	finished  chan struct{}
}

// dialTLSPair returns the client's end of a new bridged connection to addr
// (non-blocking, close-on-exec) and its bridge. The handshake happens in the
// bridge: if it fails, the client's end sees the end of stream before any
// answer to its upgrade request, and the failure is counted in fails.
func dialTLSPair(addr string, cfg *tls.Config, timeout time.Duration, fails *tlsFails) (int, *tlsBridge, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, err
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		_ = unix.Close(fds[0])
		_ = unix.Close(fds[1])
		return -1, nil, err
	}
	f := os.NewFile(uintptr(fds[1]), "tls-bridge")
	local, err := net.FileConn(f) // dups the descriptor
	_ = f.Close()
	if err != nil {
		_ = unix.Close(fds[0])
		return -1, nil, err
	}
	b := &tlsBridge{local: local, handshook: make(chan struct{}), finished: make(chan struct{})}
	go b.run(addr, cfg, timeout, fails)
	return fds[0], b, nil
}

// run dials addr with TLS and copies both ways until either side ends, or
// until detach stops it.
func (b *tlsBridge) run(addr string, cfg *tls.Config, timeout time.Duration, fails *tlsFails) {
	defer close(b.finished)
	if !b.handshake(addr, cfg, timeout, fails) {
		_ = b.local.Close()
		return
	}
	done := make(chan struct{})
	go func() {
		b.toClient()
		if !b.detaching.Load() {
			_ = b.local.(*net.UnixConn).CloseWrite()
		}
		close(done)
	}()
	// Upgrade requests, subscribes and publishes: small.
	_, _ = io.CopyBuffer(b.tc, b.local, make([]byte, 4<<10)) // client -> server; ends when the client closes its end
	if b.detaching.Load() {
		<-done
		return
	}
	_ = b.raw.SetLinger(0)
	_ = b.tc.Close()
	<-done
	_ = b.local.Close()
}

// toClient copies the server's plaintext to the client's end until either
// fails; plaintext the client's end did not take is noted in b.dropped.
func (b *tlsBridge) toClient() {
	buf := make([]byte, 16<<10) // one TLS record (at most 16 KiB of plaintext) per read
	for {
		n, err := b.tc.Read(buf)
		if n > 0 {
			if _, werr := b.local.Write(buf[:n]); werr != nil {
				b.dropped.Store(true)
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// handshake dials addr and completes the TLS handshake, then closes
// b.handshook; it reports whether both succeeded.
func (b *tlsBridge) handshake(addr string, cfg *tls.Config, timeout time.Duration, fails *tlsFails) bool {
	defer close(b.handshook)
	d := &net.Dialer{Timeout: timeout}
	conn, err := d.Dial("tcp4", addr)
	if err != nil {
		fails.note(err)
		return false
	}
	b.raw = conn.(*net.TCPConn)
	b.rr = &recordReader{TCPConn: b.raw}
	b.tc = tls.Client(b.rr, cfg)
	_ = b.tc.SetDeadline(time.Now().Add(timeout))
	if err := b.tc.Handshake(); err != nil {
		fails.note(err)
		_ = b.tc.Close()
		return false
	}
	_ = b.tc.SetDeadline(time.Time{})
	b.ok = true
	return true
}

// detach stops the bridge of an upgraded connection and returns a
// non-blocking descriptor of its TCP socket, positioned at a record
// boundary, with the AEAD overhead per record of the negotiated version
// and suite: the caller reads the server's records itself from then on,
// without decrypting them. Nothing may be sent on the descriptor (the
// client's write keys stay in the stopped crypto/tls connection).
func (b *tlsBridge) detach() (fd, overhead int, err error) {
	b.detaching.Store(true)
	<-b.handshook
	if !b.ok {
		<-b.finished
		return -1, 0, errors.New("no TLS connection")
	}
	past := time.Unix(1, 0)
	_ = b.raw.SetReadDeadline(past)
	_ = b.local.SetDeadline(past) // also a write blocked on a full socketpair
	<-b.finished
	defer b.local.Close()
	defer b.raw.Close() // the duplicate below keeps the socket open
	if !b.rr.atBoundary() || b.dropped.Load() {
		return -1, 0, errors.New("stopped inside a TLS record, or with plaintext not passed on")
	}
	if overhead, err = aeadOverhead(b.tc.ConnectionState()); err != nil {
		return -1, 0, err
	}
	sc, err := b.raw.SyscallConn()
	if err != nil {
		return -1, 0, err
	}
	fd = -1
	cerr := sc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	if cerr != nil || err != nil {
		return -1, 0, errors.Join(cerr, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return -1, 0, err
	}
	return fd, overhead, nil
}

// aeadOverhead is what an application_data record adds to its plaintext,
// its 5-byte header not counted: TLS 1.3, the inner content type and the
// 16-byte tag (no padding: the servers measured do not pad); TLS 1.2, the
// 8-byte explicit nonce and the tag for AES-GCM, the tag alone for
// ChaCha20-Poly1305.
func aeadOverhead(st tls.ConnectionState) (int, error) {
	switch {
	case st.Version == tls.VersionTLS13:
		return 1 + 16, nil
	case st.Version != tls.VersionTLS12:
		return 0, fmt.Errorf("TLS version %#x", st.Version)
	}
	switch st.CipherSuite {
	case tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384:
		return 8 + 16, nil
	case tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256:
		return 16, nil
	}
	return 0, fmt.Errorf("cipher suite %s", tls.CipherSuiteName(st.CipherSuite))
}

// recordReader passes the server's bytes to crypto/tls without reading
// past the end of the current TLS record, so that when the bridge stops
// between records nothing the server sent is left in crypto/tls's buffers.
type recordReader struct {
	*net.TCPConn
	hdr  [5]byte
	hdrN int // header bytes of the next record passed so far
	left int // body bytes of the current record still to pass
}

func (r *recordReader) Read(p []byte) (int, error) {
	if r.left > 0 {
		n, err := r.TCPConn.Read(p[:min(len(p), r.left)])
		r.left -= n
		return n, err
	}
	n, err := r.TCPConn.Read(p[:min(len(p), len(r.hdr)-r.hdrN)])
	copy(r.hdr[r.hdrN:], p[:n])
	if r.hdrN += n; r.hdrN == len(r.hdr) {
		r.hdrN, r.left = 0, int(binary.BigEndian.Uint16(r.hdr[3:]))
	}
	return n, err
}

// atBoundary reports whether every record passed on was passed whole.
func (r *recordReader) atBoundary() bool { return r.hdrN == 0 && r.left == 0 }

// tlsFails counts failed TLS dials and handshakes (from many goroutines)
// and keeps the first error.
type tlsFails struct {
	ch chan error
}

func newTLSFails() *tlsFails { return &tlsFails{ch: make(chan error, 1)} }

func (t *tlsFails) note(err error) {
	if t == nil {
		return
	}
	select {
	case t.ch <- err:
	default:
	}
}

// first returns a handshake or dial error noted since the last call, if any.
func (t *tlsFails) first() error {
	if t == nil {
		return nil
	}
	select {
	case err := <-t.ch:
		return err
	default:
		return nil
	}
}
