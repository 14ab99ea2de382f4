package engine

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TLS on the event loops (Config.TLS).
//
// A TLS connection is a tlsConn over the connection's gnetConn. Its life
// has two phases:
//
//   - Handshake. The loop appends the whole records it reads to hsIn (an
//     incomplete one stays in gnet's inbound buffer, as with records
//     below). Once the first record (the ClientHello) is there, a goroutine runs
//     crypto/tls's handshake, which blocks: it reads hsIn through tlsWire,
//     waiting for more, and its writes go to the loop as tasks. At most
//     Config.MaxTLSHandshakes run at once in the process; the handshake
//     must end by the connection's handshake deadline (accept time plus
//     Config.HandshakeTimeout), else the connection is closed. A trickled
//     or stalled ClientHello costs no goroutine: the loop's scan closes it
//     at the same deadline.
//   - Records. When the handshake is done the goroutine ends and a task on
//     the loop switches the connection to records: from then on the loop
//     reads records from the bytes it just read, whole records only
//     (tlsWire returns a temporary net.Error at the first incomplete one,
//     which crypto/tls reports without failing the connection, and the
//     incomplete record, at most 5 + tlsCiphertextMax bytes, stays in
//     gnet's inbound buffer until the rest arrives), and hands the
//     plaintext to Conn.Serve. Writes encrypt on the loop into a
//     ciphertext buffer taken from the loop's pool, written to the socket
//     at once; what the kernel does not take waits in gnet's outbound
//     buffer (Buffered). AsyncWrite from other goroutines becomes a task
//     on the loop, so tls.Conn is only ever written on the loop.
//
// tlsWire never hands crypto/tls bytes past the end of the record it is
// reading, in either phase, so crypto/tls's input buffer is empty between
// records; while the loop serves a connection's records that buffer is the
// loop's, taken back after (tlsbufs.go). An idle established connection
// holds the tls.Conn (its keys) and no input buffer, and no goroutine.

// maxHandshakeInput bounds the ciphertext held for a connection during its
// handshake: a client's flight is a few KiB, a ClientHello record at most
// 16 KiB.
const maxHandshakeInput = 32 << 10

// tlsRecordMax is the most plaintext one TLS record carries (RFC 8446
// section 5.1).
const tlsRecordMax = 16 << 10

// tlsCiphertextMax is the longest record body crypto/tls accepts (TLS 1.2's
// limit; TLS 1.3's is lower): a header announcing more is handed to it at
// once, and it fails the connection.
const tlsCiphertextMax = tlsRecordMax + 2048

// tlsWritevBudget is the most plaintext one Writev encrypts: the
// ciphertext the kernel does not take stays in gnet's buffer, so this
// bounds what a full socket pins per call.
const tlsWritevBudget = 64 << 10

// recordTypeHandshake is the first byte of a TLS handshake record.
const recordTypeHandshake = 0x16

// plainToTLS answers a plain-text HTTP request sent to the TLS port.
var plainToTLS = []byte("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 47\r\n\r\nThis port speaks TLS: use https:// or wss://.\r\n")

// errWouldBlock is what tlsWireConn.Read returns on the loop when the bytes
// read from the socket are used up.
var errWouldBlock net.Error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "engine: no more TLS input for now" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

var errTLSClosed = errors.New("engine: TLS connection closed")

// tlsConn is the Transport of a TLS connection (see above). Fields are
// owned by the loop unless they say otherwise.
type tlsConn struct {
	gc     *gnetConn
	srv    *Server
	loop   *loop
	tc     *tls.Conn
	opened time.Time

	// Shared with the handshake goroutine, under mu: the ciphertext not
	// read yet (charged to the process's input budget), and whether the
	// connection is gone. ready (capacity 1) wakes the goroutine
	// after either changes.
	mu       sync.Mutex
	hsIn     []byte
	hsClosed bool
	ready    chan struct{}

	started     bool        // the handshake goroutine was started
	established bool        // records are read on the loop
	closing     atomic.Bool // Close was called (any goroutine)
	src         []byte      // ciphertext being served (records phase)
	// recLeft is how many bytes of the record crypto/tls is reading it has
	// not read yet (0 at a record boundary); under mu during the
	// handshake.
	recLeft int
	wbuf    []byte      // ciphertext being written (from the loop's pool)
	wire    tlsWireConn // what tc reads and writes
}

// tlsWireConn is the net.Conn under tls.Conn.
type tlsWireConn struct{ t *tlsConn }

func newTLSConn(s *Server, l *loop, gc *gnetConn) *tlsConn {
	t := &tlsConn{gc: gc, srv: s, loop: l, opened: time.Now(), ready: make(chan struct{}, 1)}
	t.wire.t = t
	t.tc = tls.Server(t.wire, s.cfg.TLS)
	return t
}

// signal wakes the handshake goroutine.
func (t *tlsConn) signal() {
	select {
	case t.ready <- struct{}{}:
	default:
	}
}

// feedHandshake takes the whole records at the start of in, read during
// the handshake, and returns how many bytes they are; it starts the
// handshake once the first record is there. The bytes of an incomplete
// record stay in gnet's buffer: taken, they could end the handshake's
// last flight with part of a record header that crypto/tls has no way
// to keep once the records are read on the loop.
func (t *tlsConn) feedHandshake(in []byte) int {
	if len(in) == 0 {
		return 0
	}
	if !t.started && in[0] != recordTypeHandshake {
		// Not TLS: most likely plain HTTP.
		t.srv.tlsFailed.Add(1)
		t.gc.Write(plainToTLS)
		t.Close()
		return len(in)
	}
	if !t.started && len(in) >= 5 && int(binary.BigEndian.Uint16(in[3:5])) > tlsRecordMax {
		t.srv.tlsFailed.Add(1)
		t.Close() // no ClientHello record is that long
		return len(in)
	}
	k := wholeRecords(in)
	if k == 0 {
		return 0
	}
	t.mu.Lock()
	if len(t.hsIn)+k > maxHandshakeInput || !t.srv.input.take(k) {
		t.mu.Unlock()
		t.srv.tlsFailed.Add(1)
		t.Close()
		return len(in)
	}
	t.hsIn = append(t.hsIn, in[:k]...)
	t.mu.Unlock()
	if t.started {
		t.signal()
	} else {
		t.startHandshake()
	}
	return k
}

// wholeRecords returns how many bytes at the start of in are whole TLS
// records; a header announcing a body longer than crypto/tls accepts
// counts as whole, so that crypto/tls fails the connection at once.
func wholeRecords(in []byte) int {
	k := 0
	for len(in)-k >= 5 {
		n := int(binary.BigEndian.Uint16(in[k+3 : k+5]))
		if n > tlsCiphertextMax {
			return len(in)
		}
		if len(in)-k < 5+n {
			break
		}
		k += 5 + n
	}
	return k
}

// startHandshake runs the handshake on a goroutine, within the process's
// bound on handshakes in progress.
func (t *tlsConn) startHandshake() {
	s := t.srv
	if s.tlsHandshakes.Add(1) > int64(s.cfg.MaxTLSHandshakes) {
		s.tlsHandshakes.Add(-1)
		s.tlsRefused.Add(1)
		if s.tlsLogAllowed() {
			s.log.Warn("TLS handshakes in progress at their limit: connection closed",
				"limit", s.cfg.MaxTLSHandshakes, "remote", t.gc.RemoteAddr().String())
		}
		t.Close()
		return
	}
	t.started = true
	ctx, cancel := context.WithDeadline(context.Background(), t.opened.Add(s.cfg.HandshakeTimeout))
	go t.handshake(ctx, cancel)
}

// handshake runs on its own goroutine until the handshake ends; the loop
// then takes the connection over.
func (t *tlsConn) handshake(ctx context.Context, cancel context.CancelFunc) {
	err := t.tc.HandshakeContext(ctx)
	cancel()
	t.srv.tlsHandshakes.Add(-1)
	if err := t.loop.exec.Execute(func() { t.handshakeDone(err) }); err != nil {
		t.gc.c.Close()
	}
}

// handshakeDone switches the connection to records, on the loop.
func (t *tlsConn) handshakeDone(err error) {
	if t.gc.gone || t.closing.Load() {
		return
	}
	if err != nil {
		t.srv.tlsFailed.Add(1)
		t.Close()
		return
	}
	t.mu.Lock()
	t.established = true
	rest := t.hsIn
	t.hsIn = nil
	t.srv.input.give(len(rest))
	t.mu.Unlock()
	conn, ok := t.gc.c.Context().(*Conn)
	if !ok {
		return
	}
	conn.tlsDone(t.tc.ConnectionState())
	releaseHand(t.tc)
	// A client may send its first request right behind its Finished; the
	// loop has taken its whole records from gnet already.
	t.src = rest
	t.serveRecords(conn)
	t.src = nil
}

// traffic serves ciphertext read by the loop and returns how many of its
// bytes were used: all but an incomplete record at the end.
func (t *tlsConn) traffic(conn *Conn, in []byte) int {
	if !t.established {
		return t.feedHandshake(in)
	}
	t.src = in
	t.serveRecords(conn)
	left := len(t.src)
	t.src = nil
	if t.closing.Load() || conn.state == stateClosed {
		return len(in)
	}
	return len(in) - left
}

// serveRecords decrypts the records in t.src and serves their plaintext;
// with none (a Wake), it serves no new input. A bad record or the peer's
// close_notify closes the connection.
func (t *tlsConn) serveRecords(c *Conn) {
	l := c.loop
	if l.tlsPlain == nil {
		l.tlsPlain = make([]byte, tlsRecordMax)
	}
	if l.lendInput(t.tc) {
		defer l.takeInput(t.tc)
	}
	served := false
	for c.state != stateClosed && !t.closing.Load() {
		n, err := t.tc.Read(l.tlsPlain)
		if n > 0 {
			c.Serve(l.tlsPlain[:n])
			served = true
		}
		if err != nil {
			if !errors.Is(err, errWouldBlock) {
				t.Close() // close_notify, or a bad record
			}
			break
		}
	}
	if !served && c.state != stateClosed && !t.closing.Load() {
		c.Serve(nil)
	}
	// What crypto/tls wrote while reading (an alert, a TLS 1.3 KeyUpdate
	// answer) goes out now.
	t.push()
}

// closed runs on the loop when gnet closed the connection.
func (t *tlsConn) closed() {
	t.closing.Store(true)
	t.mu.Lock()
	t.hsClosed = true
	t.srv.input.give(len(t.hsIn))
	t.hsIn = nil
	t.mu.Unlock()
	t.signal()
	t.loop.giveOut(t.wbuf)
	t.wbuf = nil
}

// Read is crypto/tls's read, never past the end of the record it reads:
// from hsIn during the handshake (waiting for more), from the bytes being
// served afterwards (whole records only).
func (w tlsWireConn) Read(p []byte) (int, error) {
	t := w.t
	if len(p) == 0 {
		return 0, nil
	}
	if t.established {
		k := recordBytes(t.src, &t.recLeft, len(p), true)
		if k == 0 {
			return 0, errWouldBlock
		}
		n := copy(p, t.src[:k])
		t.src, t.recLeft = t.src[n:], t.recLeft-n
		return n, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	k := 0
	for !t.hsClosed {
		if k = recordBytes(t.hsIn, &t.recLeft, len(p), false); k > 0 {
			break
		}
		t.mu.Unlock()
		<-t.ready
		t.mu.Lock()
	}
	if t.hsClosed {
		return 0, net.ErrClosed
	}
	n := copy(p, t.hsIn[:k])
	t.hsIn, t.recLeft = t.hsIn[n:], t.recLeft-n
	t.srv.input.give(n)
	if len(t.hsIn) == 0 {
		t.hsIn = t.hsIn[:0:0]
	}
	return n, nil
}

// recordBytes returns how many bytes of src, at most max, crypto/tls may
// read now: none past the end of the record it reads, of which left bytes
// are still to come (0 at a record boundary: the next record starts src,
// and with whole it must be all there, else 0).
func recordBytes(src []byte, left *int, max int, whole bool) int {
	if *left == 0 {
		if len(src) < 5 {
			return 0
		}
		n := int(binary.BigEndian.Uint16(src[3:5]))
		if whole && len(src) < 5+n && n <= tlsCiphertextMax {
			return 0
		}
		*left = 5 + n
	}
	return min(len(src), *left, max)
}

// Write is crypto/tls's write: on the loop into t.wbuf, from the
// handshake goroutine as a task that writes on the loop.
func (w tlsWireConn) Write(p []byte) (int, error) {
	t := w.t
	if t.established {
		if t.wbuf == nil {
			t.wbuf = t.loop.takeOut()
		}
		t.wbuf = append(t.wbuf, p...)
		return len(p), nil
	}
	t.mu.Lock()
	closed := t.hsClosed
	t.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	b := append([]byte(nil), p...)
	err := t.loop.exec.Execute(func() {
		if !t.gc.gone {
			t.gc.Write(b)
		}
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close wakes a handshake in progress, which then fails (crypto/tls calls
// it when the handshake's context ends).
func (w tlsWireConn) Close() error {
	t := w.t
	t.mu.Lock()
	t.hsClosed = true
	t.mu.Unlock()
	t.signal()
	return nil
}

func (w tlsWireConn) LocalAddr() net.Addr              { return w.t.gc.c.LocalAddr() }
func (w tlsWireConn) RemoteAddr() net.Addr             { return w.t.gc.c.RemoteAddr() }
func (w tlsWireConn) SetDeadline(time.Time) error      { return nil }
func (w tlsWireConn) SetReadDeadline(time.Time) error  { return nil }
func (w tlsWireConn) SetWriteDeadline(time.Time) error { return nil }

// push writes the ciphertext in t.wbuf to the socket (gnet keeps what the
// kernel does not take) and gives the buffer back to the loop.
func (t *tlsConn) push() {
	if t.wbuf == nil {
		return
	}
	if len(t.wbuf) > 0 && !t.gc.gone {
		t.gc.Write(t.wbuf)
	}
	t.loop.giveOut(t.wbuf)
	t.wbuf = nil
}

// encrypt writes p through tls.Conn into t.wbuf.
func (t *tlsConn) encrypt(p []byte) bool {
	if _, err := t.tc.Write(p); err != nil {
		t.Close()
		return false
	}
	return true
}

// Write encrypts p and writes it; before the handshake is done (nothing
// of the engine's can be sent then) or once closing, it drops p.
func (t *tlsConn) Write(p []byte) {
	if !t.established || t.closing.Load() || len(p) == 0 {
		return
	}
	t.encrypt(p)
	t.push()
}

// Writev encrypts up to tlsWritevBudget bytes of iov, gathered into
// records of up to tlsRecordMax, and writes them. Encrypted bytes cannot be
// taken back, so what the kernel does not take of them stays in gnet's
// buffer (counted by Buffered) and the next Writev writes nothing until
// it is gone.
func (t *tlsConn) Writev(iov [][]byte) (int, error) {
	if !t.established || t.closing.Load() {
		return 0, errTLSClosed
	}
	if t.gc.Buffered() > 0 {
		return 0, nil
	}
	l := t.loop
	if l.tlsGather == nil {
		l.tlsGather = make([]byte, 0, tlsRecordMax)
	}
	g, total := l.tlsGather[:0], 0
	for _, p := range iov {
		for len(p) > 0 && total < tlsWritevBudget {
			k := min(len(p), tlsRecordMax-len(g), tlsWritevBudget-total)
			g = append(g, p[:k]...)
			p, total = p[k:], total+k
			if len(g) == tlsRecordMax && !t.encrypt(g) {
				return 0, errTLSClosed
			}
			if len(g) == tlsRecordMax {
				g = g[:0]
			}
		}
	}
	if len(g) > 0 && !t.encrypt(g) {
		return 0, errTLSClosed
	}
	t.push()
	if t.gc.gone {
		return 0, errTLSClosed
	}
	return total, nil
}

func (t *tlsConn) WaitWritable() { t.gc.WaitWritable() }

func (t *tlsConn) Buffered() int { return t.gc.Buffered() + len(t.wbuf) }

// CloseWrite sends close_notify, then half-closes the socket.
func (t *tlsConn) CloseWrite() {
	if !t.established || t.closing.Load() {
		return
	}
	_ = t.tc.CloseWrite()
	t.push()
	t.gc.CloseWrite()
}

func (t *tlsConn) ResetOnClose() { t.gc.ResetOnClose() }

// Close closes the connection; a handshake in progress fails at once.
// Safe from any goroutine.
func (t *tlsConn) Close() {
	t.closing.Store(true)
	_ = t.wire.Close()
	t.gc.Close()
}

func (t *tlsConn) Wake() { t.gc.Wake() }

func (t *tlsConn) RemoteAddr() net.Addr { return t.gc.RemoteAddr() }

// AsyncWrite encrypts p on the loop, in a task: never beside the loop's
// own writes.
func (t *tlsConn) AsyncWrite(p []byte, done func(int, error)) error {
	return t.loop.exec.Execute(func() {
		if t.gc.gone || t.closing.Load() {
			done(0, errTLSClosed)
			return
		}
		t.Write(p)
		done(t.Buffered(), nil)
	})
}

// tlsLogAllowed rate-limits the TLS warnings to one a second.
func (s *Server) tlsLogAllowed() bool {
	now := time.Now().UnixNano()
	last := s.tlsLogged.Load()
	return now-last >= int64(time.Second) && s.tlsLogged.CompareAndSwap(last, now)
}

// registerTLSMetrics adds the TLS handshake counters to /metrics.
func (s *Server) registerTLSMetrics(r *prometheus.Registry) {
	r.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "zenconn_tls_handshakes_in_progress", Help: "TLS handshakes under way (each on a goroutine until it ends)."},
			func() float64 { return float64(s.tlsHandshakes.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "zenconn_tls_handshakes_refused_total", Help: "TLS connections closed because the bound on handshakes in progress was reached."},
			func() float64 { return float64(s.tlsRefused.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "zenconn_tls_handshakes_failed_total", Help: "TLS handshakes that failed or did not end by the handshake deadline, and plain-text requests to the TLS port."},
			func() float64 { return float64(s.tlsFailed.Load()) }),
	)
}

// TLSConfig returns the server configuration ZenConn serves TLS with: the
// certificate (its chain included), TLS 1.2 or later (minVersion may raise
// it to 1.3), for TLS 1.2 only ECDHE key exchange with AES-GCM or
// ChaCha20-Poly1305 (TLS 1.3's suites are all AEAD), and ALPN http/1.1.
func TLSConfig(cert tls.Certificate, minVersion uint16) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   max(minVersion, tls.VersionTLS12),
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		NextProtos: []string{"http/1.1"},
	}
}
