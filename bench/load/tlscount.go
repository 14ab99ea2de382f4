package main

// Counting deliveries without decrypting them (--tls-sample). A wss://
// subscriber that is not one of the sample connections is detached from
// its TLS bridge once subscribed (tlsBridge.detach): from then on the
// client reads the server's TLS records straight from the TCP socket and
// adds up their plaintext sizes (record length minus the AEAD overhead of
// the negotiated version and suite), complete records only. The mode turns
// those bytes into deliveries with the size of a delivered frame, which the
// sample connections (decrypting and checking everything) measure. The
// server still encrypts every delivery; the generator no longer decrypts
// most of them.

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// rawRecords is the state of a detached connection's record parser.
type rawRecords struct {
	overhead int // AEAD overhead per record
	hdr      [5]byte
	hdrN     int   // header bytes of the next record read so far
	left     int   // body bytes of the current record still to come
	cur      int   // plaintext bytes of the current record
	plain    int64 // plaintext bytes of the complete records
	records  int64 // complete records
}

// maxRecordBody is the largest record body TLS allows (RFC 8446 5.2:
// 2^14 + 256).
const maxRecordBody = 16<<10 + 256

// feed parses b; an error means the stream is not a sequence of TLS 1.2
// application_data records (an alert, a handshake message, a bad length).
func (r *rawRecords) feed(b []byte) error {
	for len(b) > 0 {
		if r.left > 0 {
			k := min(r.left, len(b))
			r.left -= k
			b = b[k:]
			if r.left == 0 {
				r.plain += int64(r.cur)
				r.records++
			}
			continue
		}
		k := copy(r.hdr[r.hdrN:], b)
		r.hdrN += k
		b = b[k:]
		if r.hdrN < len(r.hdr) {
			return nil
		}
		r.hdrN = 0
		n := int(binary.BigEndian.Uint16(r.hdr[3:]))
		switch {
		case r.hdr[0] == 21:
			return errors.New("TLS alert record")
		case r.hdr[0] != 23 || r.hdr[1] != 3 || r.hdr[2] != 3:
			return fmt.Errorf("record header % x: not application data", r.hdr)
		case n <= r.overhead || n > maxRecordBody:
			return fmt.Errorf("record length %d (AEAD overhead %d)", n, r.overhead)
		}
		r.left, r.cur = n, n-r.overhead
	}
	return nil
}

// queueDetach asks for c to be detached from its TLS bridge once the
// current poll's events are handled (not from inside a read of c).
func (cl *client[C]) queueDetach(c C) { cl.detachQ = append(cl.detachQ, c) }

// detachQueued detaches the connections queued by queueDetach.
func (cl *client[C]) detachQueued() {
	for _, c := range cl.detachQ {
		cl.detach(c)
	}
	clear(cl.detachQ)
	cl.detachQ = cl.detachQ[:0]
}

// detach replaces c's socketpair end with the TCP socket of its bridge, in
// the epoll set, and parses its records from then on (readRaw). Plaintext
// still in the socketpair, or a frame begun, fails c: nothing is expected
// from the server between the subscribe's answer and the first delivery.
func (cl *client[C]) detach(c C) {
	w := c.transport()
	if w.closed() || w.br == nil {
		return
	}
	fd, overhead, err := w.br.detach()
	w.br = nil
	if err == nil {
		if n, _ := unix.Read(w.fd, cl.rbuf); n > 0 || len(w.pending) > 0 || len(w.frag) > 0 {
			err = fmt.Errorf("%d bytes from the server between the subscribe and the detach", n+len(w.pending)+len(w.frag))
			_ = unix.Close(fd)
		}
	}
	delete(cl.byFd, w.fd)
	_ = unix.Close(w.fd)
	w.fd = -1
	if err == nil {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}
		w.fd = fd
		if err = unix.EpollCtl(cl.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err == nil {
			cl.byFd[fd] = c
			w.raw = &rawRecords{overhead: overhead}
			return
		}
		_ = unix.Close(fd)
		w.fd = -1
	}
	cl.h.onFail(c, "tls_detach", err.Error())
}

// readRaw reads a detached connection's records.
func (cl *client[C]) readRaw(c C, now int64) {
	w := c.transport()
	n, err := unix.Read(w.fd, cl.rbuf)
	switch {
	case err != nil && errors.Is(err, unix.EAGAIN):
		return
	case err != nil:
		cl.h.onEnd(c, err, now)
		return
	case n == 0:
		cl.h.onEnd(c, nil, now)
		return
	}
	if err := w.raw.feed(cl.rbuf[:n]); err != nil {
		cl.h.onFail(c, "tls_record", err.Error())
		return
	}
	cl.h.onRawData(c, now)
}

// tlsCount is a process's side of --tls-sample: the size of a delivered
// frame as the sample connections saw it, and what the detached
// connections' records added up to.
type tlsCount struct {
	frameMin, frameMax int   // delivered frame sizes (header included) seen decrypted
	detached           int   // connections detached
	records, plain     int64 // their complete records and plaintext bytes
	deliveries         int64 // deliveries counted from them
}

// TLSCountResult is tlsCount in a worker's result.
type TLSCountResult struct {
	Samples    int   `json:"sample_conns"`
	Detached   int   `json:"counted_conns"`
	FrameMin   int   `json:"frame_bytes_min"`
	FrameMax   int   `json:"frame_bytes_max"`
	Records    int64 `json:"records"`
	Plain      int64 `json:"plaintext_bytes"`
	Deliveries int64 `json:"deliveries"`
	Partial    int   `json:"conns_ending_inside_a_frame"`
	Off        int   `json:"conns_counting_other_than_published"`
}

// isSample reports whether subscriber i of a process decrypts and checks
// everything: every subscriber without --tls-sample N; with it, one in N,
// and the first ones so that the run has --tls-sample-min at least.
func isSample(cfg *config, i int) bool {
	if cfg.tlsSample <= 0 {
		return true
	}
	perProc := (cfg.tlsSampleMin + cfg.procs - 1) / cfg.procs
	return i%cfg.tlsSample == 0 || i < perProc
}

// serverFrameSize is the size of an unmasked server frame carrying n
// payload bytes.
func serverFrameSize(n int) int {
	switch {
	case n < 126:
		return 2 + n
	case n <= 0xffff:
		return 4 + n
	}
	return 10 + n
}

// noteFrameSize records the size of a delivery seen decrypted (a message
// of n bytes, one per frame: ZenConn's protocol). The first one lets the
// detached connections' bytes count.
func (l *loop) noteFrameSize(n int) {
	if l.cent || l.cfg.tlsSample <= 0 {
		return
	}
	fs := serverFrameSize(n)
	t := &l.tlsCount
	if t.frameMin != 0 {
		t.frameMin, t.frameMax = min(fs, t.frameMin), max(fs, t.frameMax)
	} else {
		t.frameMin, t.frameMax = fs, fs
		for _, c := range l.conns {
			if c.raw != nil && c.raw.plain > 0 {
				l.onRawData(c, l.lastRecv)
			}
		}
	}
}

// onRawData counts the whole frames a detached connection's plaintext
// holds, once the frame size is known.
func (l *loop) onRawData(c *conn, now int64) {
	fs := int64(l.tlsCount.frameMin)
	if fs == 0 {
		return
	}
	n := c.raw.plain / fs
	if n > c.counted {
		l.received += n - c.counted
		l.tlsCount.deliveries += n - c.counted
		c.counted = n
		if now > l.lastRecv {
			l.lastRecv = now
		}
	}
}

// tlsCountResult checks the count at the end of a run and returns it for
// the worker's result (nil without --tls-sample): deliveries of different
// sizes, plaintext that no sample could size, and connections whose
// plaintext ends inside a frame are protocol errors.
func (l *loop) tlsCountResult() *TLSCountResult {
	if l.cfg.tlsSample <= 0 || l.cfg.tls == nil {
		return nil
	}
	t := &l.tlsCount
	r := &TLSCountResult{FrameMin: t.frameMin, FrameMax: t.frameMax, Deliveries: t.deliveries}
	for _, c := range l.conns {
		switch {
		case c.raw != nil:
			r.Detached++
			r.Records += c.raw.records
			r.Plain += c.raw.plain
			if t.frameMin > 0 && c.raw.plain%int64(t.frameMin) != 0 {
				r.Partial++
			}
			if l.endN >= 0 && c.counted != l.endN {
				r.Off++
			}
		case c.role == roleSub && c.sample:
			r.Samples++
		}
	}
	switch {
	case t.frameMin != t.frameMax:
		l.protoErr("tls_count_frame_sizes", fmt.Sprintf("deliveries of %d to %d bytes: counting by size needs one size", t.frameMin, t.frameMax))
	case t.frameMin == 0 && r.Plain > 0:
		l.protoErr("tls_count_unsized", fmt.Sprintf("%d plaintext bytes and no decrypted delivery to size them", r.Plain))
	case r.Partial > 0:
		l.protoErr("tls_count_partial_frame", fmt.Sprintf("%d counted connections end inside a frame", r.Partial))
	case r.Off > 0:
		l.protoErr("tls_count_not_published", fmt.Sprintf("%d counted connections did not count the %d publishes", r.Off, l.endN))
	}
	return r
}

// sumTLSCount adds up the workers' counts (nil without --tls-sample).
func sumTLSCount(results []*workerResult) *TLSCountResult {
	var s *TLSCountResult
	for _, r := range results {
		t := r.TLSCount
		if t == nil {
			continue
		}
		if s == nil {
			s = &TLSCountResult{FrameMin: t.FrameMin, FrameMax: t.FrameMax}
		}
		s.Samples += t.Samples
		s.Detached += t.Detached
		s.Records += t.Records
		s.Plain += t.Plain
		s.Deliveries += t.Deliveries
		s.Partial += t.Partial
		s.Off += t.Off
		if t.FrameMin > 0 && (s.FrameMin == 0 || t.FrameMin < s.FrameMin) {
			s.FrameMin = t.FrameMin
		}
		s.FrameMax = max(s.FrameMax, t.FrameMax)
	}
	return s
}
