package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
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

// dialTLSPair returns the client's end of a new bridged connection to addr
// (non-blocking, close-on-exec). The handshake happens in the bridge: if it
// fails, the client's end sees the end of stream before any answer to its
// upgrade request, and the failure is counted in fails.
func dialTLSPair(addr string, cfg *tls.Config, timeout time.Duration, fails *tlsFails) (int, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		_ = unix.Close(fds[0])
		_ = unix.Close(fds[1])
		return -1, err
	}
	f := os.NewFile(uintptr(fds[1]), "tls-bridge")
	local, err := net.FileConn(f) // dups the descriptor
	_ = f.Close()
	if err != nil {
		_ = unix.Close(fds[0])
		return -1, err
	}
	go bridge(local, addr, cfg, timeout, fails)
	return fds[0], nil
}

// bridge dials addr with TLS and copies both ways until either side ends.
func bridge(local net.Conn, addr string, cfg *tls.Config, timeout time.Duration, fails *tlsFails) {
	d := &net.Dialer{Timeout: timeout}
	raw, err := d.Dial("tcp4", addr)
	if err != nil {
		fails.note(err)
		_ = local.Close()
		return
	}
	tc := tls.Client(raw, cfg)
	_ = tc.SetDeadline(time.Now().Add(timeout))
	if err := tc.Handshake(); err != nil {
		fails.note(err)
		_ = tc.Close()
		_ = local.Close()
		return
	}
	_ = tc.SetDeadline(time.Time{})
	done := make(chan struct{})
	go func() {
		// One TLS record (at most 16 KiB of plaintext) per read.
		_, _ = io.CopyBuffer(local, tc, make([]byte, 16<<10)) // server -> client
		_ = local.(*net.UnixConn).CloseWrite()
		close(done)
	}()
	// Upgrade requests, subscribes and publishes: small.
	_, _ = io.CopyBuffer(tc, local, make([]byte, 4<<10)) // client -> server; ends when the client closes its end
	_ = raw.(*net.TCPConn).SetLinger(0)
	_ = tc.Close()
	<-done
	_ = local.Close()
}

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
