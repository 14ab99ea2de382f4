package main

import (
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/gobwas/ws"
)

func TestHistQuantiles(t *testing.T) {
	var h hist
	for i := int64(1); i <= 100000; i++ {
		h.record(i)
	}
	for _, c := range []struct {
		q    float64
		want int64
	}{
		{
			q:    0.5,
			want: 50000,
		},
		{
			q:    0.99,
			want: 99000,
		},
	} {
		got := h.quantile(c.q)
		if d := float64(got-c.want) / float64(c.want); d > 0.02 || d < -0.02 {
			t.Errorf(
				"quantile(%v) = %d, want %d within 2%%",
				c.q, got, c.want,
			)
		}
	}
	if h.max != 100000 || h.n != 100000 {
		t.Fatalf(
			"max %d n %d",
			h.max, h.n,
		)
	}
	var m hist
	m.merge(h.sparse(), h.max)
	if m.quantile(0.5) != h.quantile(0.5) || m.n != h.n {
		t.Fatalf(
			"merge changed the histogram",
		)
	}
}

func TestHistIndexMonotonic(t *testing.T) {
	prev := -1
	for v := int64(0); v < 1<<24; v += 1 + v/97 {
		i := histIndex(v)
		if i < prev {
			t.Fatalf(
				"index(%d) = %d < %d",
				v, i, prev,
			)
		}
		if lo := histValue(i); lo > v {
			t.Fatalf(
				"bucket %d lower bound %d above value %d",
				i, lo, v,
			)
		}
		prev = i
	}
}

// unmask decodes one masked client frame.
func unmask(t *testing.T, f []byte) []byte {
	t.Helper()
	n := int(f[1] & 0x7f)
	h := 2
	switch n {
	case 126:
		n, h = int(binary.BigEndian.Uint16(f[2:])), 4
	case 127:
		n, h = int(binary.BigEndian.Uint64(f[2:])), 10
	}
	if f[1]&0x80 == 0 || len(f) != h+4+n {
		t.Fatalf(
			"bad frame: masked=%v len=%d header=%d payload=%d",
			f[1]&0x80 != 0, len(f), h, n,
		)
	}
	var m [4]byte
	copy(m[:], f[h:h+4])
	p := append([]byte(nil), f[h+4:]...)
	ws.Cipher(p, m, 0)
	return p
}

func TestPublishFrameSize(t *testing.T) {
	for _, size := range []int{64, 200, 1000, 70000} {
		cfg := &config{size: size, channel: "c"}
		l := &loop{cfg: cfg, pub: &conn{wsConn: wsConn{fd: -1, phase: wsClosed}}}
		l.rnd = 1
		l.publish(l.pub, 12345)
		f := l.pframe
		if len(f) != size {
			t.Errorf(
				"size %d: frame is %d bytes",
				size, len(f),
			)
		}
		var m struct {
			ID      int64  `json:"id"`
			Op      string `json:"op"`
			Channel string `json:"channel"`
			Data    string `json:"data"`
		}
		if err := json.Unmarshal(unmask(t, f), &m); err != nil {
			t.Fatalf(
				"size %d: %v",
				size, err,
			)
		}
		if m.ID != 2 || m.Op != "publish" || m.Channel != "c" || m.Data[:2] != "12" {
			t.Errorf(
				"size %d: unexpected %+v",
				size, m,
			)
		}
	}
}

// TestParseFramesSplit feeds server frames in random pieces and checks each
// delivery is seen once, whatever the split.
func TestParseFramesSplit(t *testing.T) {
	var stream []byte
	const n = 200
	for i := range n {
		p := []byte(`{"op":"message","channel":"c","from":"x","data":"` + string(rune('1'+i%9)) + `xxxx"}`)
		if i%7 == 0 {
			p = append(p, make([]byte, 300)...) // 16-bit length form
			p[len(p)-1] = ' '
		}
		stream = append(stream, ws.MustCompileFrame(ws.NewTextFrame(p))...)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 20 {
		cfg := &config{channel: "c"}
		l := &loop{cfg: cfg}
		l.h, l.errs = l, map[string]*errStat{}
		c := &conn{wsConn: wsConn{fd: -1, phase: wsOpen}, welcome: true, lastOff: -1}
		var pending []byte
		for rest := stream; len(rest) > 0; {
			k := min(len(rest), 1+r.IntN(120))
			buf := append(append([]byte(nil), pending...), rest[:k]...)
			rest = rest[k:]
			used := l.parseFrames(c, buf, 0)
			pending = append([]byte(nil), buf[used:]...)
		}
		if l.received != n || len(pending) != 0 {
			t.Fatalf(
				"trial %d: received %d of %d, %d bytes left",
				trial, l.received, n, len(pending),
			)
		}
	}
}
