package e2e

// The binary protocol (zenconn.v1.bin): how it is chosen at the handshake, its framing
// from the welcome on, request/reply encoding, and data crossing between JSON and
// binary clients. The codec helpers (ibDecode, ibBin*) live in identity_test.go.

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

func TestBinaryProtocolChoice(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	cases := []struct {
		name     string
		o        ibDialOpts
		bin      bool
		subproto string // expected Sec-WebSocket-Protocol ("" = absent)
	}{
		{"default", ibDialOpts{}, false, ""},
		{"X-Bin-Protocol: 1", ibDialOpts{Header: hdr("X-Bin-Protocol", "1")}, true, ""},
		{"X-Bin-Protocol: true", ibDialOpts{Header: hdr("X-Bin-Protocol", "true")}, true, ""},
		{"X-Bin-Protocol: yes", ibDialOpts{Header: hdr("X-Bin-Protocol", "yes")}, true, ""},
		{"X-Bin-Protocol: 0", ibDialOpts{Header: hdr("X-Bin-Protocol", "0")}, false, ""},
		{"X-Bin-Protocol: false", ibDialOpts{Header: hdr("X-Bin-Protocol", "false")}, false, ""},
		{"X-Bin-Protocol: FALSE", ibDialOpts{Header: hdr("X-Bin-Protocol", "FALSE")}, false, ""},
		{"subprotocol zenconn.v1.bin", ibDialOpts{Subproto: []string{"zenconn.v1.bin"}}, true, "zenconn.v1.bin"},
		{"subprotocols other, zenconn.v1.bin", ibDialOpts{Subproto: []string{"chat.example", "zenconn.v1.bin"}}, true, "zenconn.v1.bin"},
		{"?proto=bin", ibDialOpts{Query: "proto=bin"}, true, ""},
		{"X-JSON-Protocol: 1", ibDialOpts{Header: hdr("X-JSON-Protocol", "1")}, false, ""},
		{"subprotocol zenconn.v1.json", ibDialOpts{Subproto: []string{"zenconn.v1.json"}}, false, "zenconn.v1.json"},
		{"?proto=json", ibDialOpts{Query: "proto=json"}, false, ""},
		// Precedence documented in engine/handshake.go: headers, then subprotocol, then query.
		{"X-JSON-Protocol beats ?proto=bin", ibDialOpts{Header: hdr("X-JSON-Protocol", "1"), Query: "proto=bin"}, false, ""},
		{"X-Bin-Protocol beats ?proto=json", ibDialOpts{Header: hdr("X-Bin-Protocol", "1"), Query: "proto=json"}, true, ""},
		{"zenconn.v1.json beats ?proto=bin", ibDialOpts{Subproto: []string{"zenconn.v1.json"}, Query: "proto=bin"}, false, "zenconn.v1.json"},
		{"zenconn.v1.bin beats ?proto=json", ibDialOpts{Subproto: []string{"zenconn.v1.bin"}, Query: "proto=json"}, true, "zenconn.v1.bin"},
		// The header wins; the contradicting subprotocol must not be echoed.
		{"X-Bin-Protocol with only zenconn.v1.json offered", ibDialOpts{Header: hdr("X-Bin-Protocol", "1"), Subproto: []string{"zenconn.v1.json"}}, true, ""},
		{"unknown subprotocol only", ibDialOpts{Subproto: []string{"chat.example"}}, false, ""},
	}
	var node string
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ibDial(t, s, tc.o)
			if c.Bin != tc.bin {
				t.Fatalf("binary protocol = %v, want %v", c.Bin, tc.bin)
			}
			if got := c.Resp.Header.Get("Sec-WebSocket-Protocol"); got != tc.subproto {
				t.Errorf("Sec-WebSocket-Protocol %q, want %q", got, tc.subproto)
			}
			if node == "" {
				node = c.Node
			} else if c.Node != node {
				t.Errorf("welcome node %q, another connection got %q", c.Node, node)
			}
			// Replies stay in the chosen protocol.
			c.pingPong()
			c.pingPong()
		})
	}
	t.Run("?proto=xml", func(t *testing.T) {
		body := ibRefused(t, s, ibDialOpts{Query: "proto=xml"}, http.StatusBadRequest)
		if strings.TrimSpace(body) == "" {
			t.Errorf("400 without a reason")
		}
		ibRefused(t, s, ibDialOpts{Query: "proto=xml", Header: hdr("X-Bin-Protocol", "1")}, http.StatusBadRequest)
	})
}

func TestBinaryWelcome(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	j := ibDialJSON(t, s, "")
	seen := map[string]bool{j.ID: true}
	for i := 0; i < 5; i++ {
		b := ibDialBin(t, s, "")
		// ibDial decoded the welcome strictly: head 0x11 (no flags), three str8, nothing after.
		if b.Node != j.Node {
			t.Errorf("binary welcome node %q, JSON welcome node %q", b.Node, j.Node)
		}
		if seen[b.ID] {
			t.Errorf("conn id %q given twice", b.ID)
		}
		seen[b.ID] = true
		want := append(append(append([]byte{0x11, byte(len(b.ID))}, b.ID...), byte(len(b.Node))), b.Node...)
		want = append(want, 3, 'b', 'i', 'n')
		if !bytes.Equal(b.Welcome, want) {
			t.Errorf("welcome % x, want % x", b.Welcome, want)
		}
	}
}

func TestBinaryTextFrameOnBinary(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for _, o := range []ibDialOpts{{Query: "proto=bin"}, {Subproto: []string{"zenconn.v1.bin"}}} {
		c := ibDial(t, s, o)
		c.send(`{"id":1,"op":"ping"}`)
		m := c.readBin()
		if m.Op != 0x13 || m.Code != ibBadRequest || m.ID != "" || m.Message == "" {
			t.Fatalf("text frame on a binary connection answered %s, want error code 1 (bad_request) with a message and no id", m)
		}
		c.send(`{"op":"subscribe","channel":"x"}`)
		if m := c.readBin(); m.Op != 0x13 || m.Code != ibBadRequest {
			t.Fatalf("second text frame answered %s, want error code 1", m)
		}
		// Still open and in sync.
		c.pingPong()
		c.binOK(7, ibBinSub(7, "x"))
	}
}

func TestBinaryRequests(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := ibDialBin(t, s, "")
	hexb := func(h string) []byte {
		t.Helper()
		b, err := hex.DecodeString(h)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	exact := func(req, want string) {
		t.Helper()
		c.sendBin(hexb(req))
		f := c.next()
		if f.typ != websocket.BinaryMessage || hex.EncodeToString(f.p) != want {
			t.Fatalf("request %s answered %s, want binary[%s]", req, describeIB(f), want)
		}
	}
	// Client vectors of proto/testdata/binary_vectors.json, with the replies they imply.
	exact("8101046e657773", "9201")             // subscribe id 1 "news" → ack 1
	exact("83ac0201617b2278223a317d", "92ac02") // publish id 300, JSON data → ack 300 (2-byte varint)
	exact("c302016100ff", "9202")               // publish id 2, opaque data → ack 2
	exact("06", "15")                           // ping → pong
	c.sendBin(hexb("02046e657773"))             // unsubscribe without id: no reply
	c.sendBin(hexb("0422686922"))               // broadcast without id: refused (anonymous), error without id
	if m := c.readBin(); m.Op != 0x13 || m.Code != ibUnauthorized || m.ID != "" {
		t.Fatalf("anonymous broadcast answered %s, want error code 3 without id", m)
	}
	c.binRefused(5, hexb("8505616263"), ibUnauthorized) // auth on a server without tokens
	exact("06", "15")

	// The largest id (2^63-1) is echoed; ids are varints of any length below 2^63.
	for _, id := range []uint64{127, 128, 16384, math.MaxInt64} {
		c.binOK(id, ibBinSub(id, "ids"))
	}

	// Invalid vectors: error code 1 (bad_request); the connection stays open.
	for _, v := range []struct{ name, hex string }{
		{"id flag with truncated varint", "81ff"},
		{"id of 2^63", "81808080808080808080" + "01" + "046e657773"},
		{"reserved flag bit", "26"},
		{"unknown op", "1f"},
		{"server op sent by a client", "15"},
		{"welcome sent by a client", "11026b31026e310362696e"},
		{"channel length past the end", "0104616263"},
		{"empty channel", "0100"},
		{"channel with a space", "0103612062"},
		{"channel of 129 bytes", "0181" + strings.Repeat("61", 129)},
		{"opaque flag on ping", "46"},
		{"opaque flag on subscribe", "410161"},
		{"trailing bytes after ping", "0600"},
		{"trailing bytes after subscribe's channel", "0101610a"},
		{"publish data flagged JSON but not JSON", "03016100"},
		{"publish data flagged JSON, invalid UTF-8", "030161" + hex.EncodeToString([]byte("\"\xff\""))},
		{"publish without data", "030161"},
		{"broadcast without data", "04"},
		{"auth without token", "05"},
	} {
		req := hexb(v.hex)
		c.sendBin(req)
		m := c.readBin()
		if m.Op != 0x13 || m.Code != ibBadRequest || m.ID != "" || m.Message == "" {
			t.Errorf("%s (% x): answered %s, want error code 1 with a message, no id", v.name, req, m)
		}
	}
	// A bad request whose id could be read gets its id back.
	c.binRefused(5, hexb("8105"+"0103612062"), ibBadRequest)
	c.binRefused(300, hexb("83ac02"+"016100"), ibBadRequest) // publish id 300, data "\x00" flagged JSON
	exact("06", "15")
	c.binOK(9, ibBinUnsub(9, "never-subscribed"))

	// limit_exceeded (code 2) past 1,024 subscriptions; the connection stays usable.
	l := ibDialBin(t, s, "")
	for i := 1; i <= 1024; i++ {
		l.sendBin(ibBinSub(uint64(i), fmt.Sprintf("ch-%d", i)))
	}
	// Answers are matched by id: on a cluster node a subscription waits
	// for its channel's interest, so acks may come in another order.
	acked := map[string]bool{}
	for range 1024 {
		m := l.readBin()
		if m.Op != 0x12 || acked[m.ID] {
			t.Fatalf("a subscription answered %s, want an ack of a new id", m)
		}
		acked[m.ID] = true
	}
	for i := 1; i <= 1024; i++ {
		if !acked[fmt.Sprint(i)] {
			t.Fatalf("subscription %d got no ack", i)
		}
	}
	l.binRefused(2000, ibBinSub(2000, "one-too-many"), ibLimit)
	l.binOK(2001, ibBinSub(2001, "ch-7")) // already subscribed: not a new subscription
	l.binOK(2002, ibBinUnsub(2002, "ch-7"))
	l.binOK(2003, ibBinSub(2003, "one-too-many"))
}

func TestBinaryPubSub(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	pub := ibDialBin(t, s, "")
	sub1 := ibDialBin(t, s, "")
	sub2 := ibDial(t, s, ibDialOpts{Subproto: []string{"zenconn.v1.bin"}})
	pub.binOK(1, ibBinSub(1, "room"))
	sub1.binOK(1, ibBinSub(1, "room"))
	sub2.binOK(1, ibBinSub(1, "room"))

	// JSON data, exact bytes (whitespace included), flag clear.
	data := []byte(`{ "text" : "héllo", "n": [1, 2.50] }`)
	pub.binOK(2, ibBinPub(2, "room", data, false))
	for _, c := range []*ibConn{sub1, sub2} {
		m := c.readBin()
		if m.Op != 0x14 || m.Head != 0x14 || m.Channel != "room" || m.From != pub.ID || !bytes.Equal(m.Data, data) {
			t.Fatalf("%s: got %s, want 0x14 room from %s data %q", c.name, m, pub.ID, data)
		}
	}
	// Opaque data: raw bytes with the 0x40 flag; empty and large payloads included.
	big := make([]byte, 100<<10)
	_, _ = rand.Read(big)
	for i, payload := range [][]byte{{0x00, 0xff, 0xfe, '"', '\\'}, {}, big} {
		id := uint64(3 + i)
		pub.binOK(id, ibBinPub(id, "room", payload, true))
		for _, c := range []*ibConn{sub1, sub2} {
			m := c.readBin()
			if m.Op != 0x14 || m.Head != 0x54 || !m.Opaque || m.Channel != "room" || m.From != pub.ID || !bytes.Equal(m.Data, payload) {
				t.Fatalf("%s: opaque publish of %d bytes arrived as head 0x%02x opaque %v channel %q from %q, %d bytes (equal %v)",
					c.name, len(payload), m.Head, m.Opaque, m.Channel, m.From, len(m.Data), bytes.Equal(m.Data, payload))
			}
		}
	}
	// Unsubscribed: nothing more; the publisher never got its own messages.
	sub2.binOK(9, ibBinUnsub(9, "room"))
	pub.binOK(10, ibBinPub(10, "room", []byte(`1`), false))
	sub1.expectMsg("room", pub.ID, `1`)
	pub.pingPong()
	for _, c := range []*ibConn{pub, sub1, sub2} {
		c.quiet(100 * time.Millisecond)
	}
}

func TestBinaryCrossProtocol(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--jwt-secret", ibSecret)
	jpub := ibDialJSON(t, s, ibToken(t, "jp", ibGrants{Broadcast: true}))
	bpub := ibDialBin(t, s, ibToken(t, "bp", ibGrants{Broadcast: true}))
	jsub := ibDialJSON(t, s, "")
	bsub := ibDialBin(t, s, "")
	jsub.sub(1, "mix")
	bsub.binOK(1, ibBinSub(1, "mix"))

	// JSON publisher → binary subscriber: the same JSON bytes, flag clear.
	data := `{"a" : [1,2.5e3,{"b":null}], "s":"\u00e9é\n", "t":true}`
	jpub.pub(1, "mix", data)
	m := bsub.readBin()
	if m.Op != 0x14 || m.Head != 0x14 || m.Channel != "mix" || m.From != jpub.ID || string(m.Data) != data {
		t.Fatalf("binary subscriber got %s (data %q), want 0x14 mix from %s data %q", m, m.Data, jpub.ID, data)
	}
	if jm := jsub.readJSON(); jm.Op != "message" || string(jm.Data) != data || jm.has("enc") {
		t.Fatalf("JSON subscriber got %s, want data %s verbatim", jm, data)
	}

	// Binary publisher with JSON data → JSON subscriber: the same JSON.
	for i, d := range []string{`{"x": 1,  "y":"z"}`, `"just a string"`, `null`, `12.75`, `[ ]`} {
		bpub.binOK(uint64(10+i), ibBinPub(uint64(10+i), "mix", []byte(d), false))
		jm := jsub.readJSON()
		if jm.Op != "message" || jm.Channel != "mix" || jm.From != bpub.ID || string(jm.Data) != d || jm.has("enc") {
			t.Fatalf("JSON subscriber got %s, want message mix from %s with data %s verbatim and no enc", jm, bpub.ID, d)
		}
		bm := bsub.readBin()
		if bm.Head != 0x14 || string(bm.Data) != d {
			t.Fatalf("binary subscriber got %s, want data %q with flag clear", bm, d)
		}
	}

	// Binary opaque → JSON: "enc":"base64" and standard padded base64; binary: raw, 0x40.
	big := make([]byte, 64<<10+1)
	_, _ = rand.Read(big)
	for i, raw := range [][]byte{{0xfb, 0xff, 0xfe, 0x00, 0x01}, {0x3e}, {}, []byte("plain text is opaque too"), big} {
		id := uint64(20 + i)
		bpub.binOK(id, ibBinPub(id, "mix", raw, true))
		jm := jsub.readJSON()
		want := `"` + base64.StdEncoding.EncodeToString(raw) + `"`
		if jm.Op != "message" || jm.Channel != "mix" || jm.From != bpub.ID || jm.Enc != "base64" || string(jm.Data) != want {
			t.Fatalf("JSON subscriber got %.200s, want enc base64 and data %.200s", jm, want)
		}
		bm := bsub.readBin()
		if bm.Head != 0x54 || !bytes.Equal(bm.Data, raw) {
			t.Fatalf("binary subscriber got %s, want head 0x54 and the raw bytes % x", bm, raw)
		}
	}

	// Broadcasts cross the same way, without a channel.
	jpub.ok(2, `{"id":2,"op":"broadcast","data":{"k": "v"}}`)
	bsub.expectMsg("", jpub.ID, `{"k": "v"}`)
	jsub.expectMsg("", jpub.ID, `{"k": "v"}`)
	bpub.expectMsg("", jpub.ID, `{"k": "v"}`)
	bpub.binOK(30, ibBinBroadcast(30, []byte{0xde, 0xad}, true))
	jm := jsub.readJSON()
	if jm.Op != "message" || jm.has("channel") || jm.From != bpub.ID || jm.Enc != "base64" || string(jm.Data) != `"3q0="` {
		t.Fatalf("JSON subscriber got %s, want an opaque broadcast without channel, enc base64, data \"3q0=\"", jm)
	}
	bm := bsub.readBin()
	if bm.Head != 0x54 || bm.Channel != "" || bm.From != bpub.ID || !bytes.Equal(bm.Data, []byte{0xde, 0xad}) {
		t.Fatalf("binary subscriber got %s, want 54 00 <from> de ad", bm)
	}
	jpm := jpub.readJSON()
	if jpm.Enc != "base64" || string(jpm.Data) != `"3q0="` {
		t.Fatalf("JSON publisher got %s, want the opaque broadcast as base64", jpm)
	}

	// Invalid JSON flagged as JSON is refused and delivered to nobody.
	bpub.binRefused(40, ibBinPub(40, "mix", []byte(`{"x":`), false), ibBadRequest)
	bpub.binRefused(41, ibBinBroadcast(41, []byte(`nope`), false), ibBadRequest)
	jpub.pub(3, "mix", `"canary"`)
	jsub.expectMsg("mix", jpub.ID, `"canary"`)
	bsub.expectMsg("mix", jpub.ID, `"canary"`)
	for _, c := range []*ibConn{jpub, bpub, jsub, bsub} {
		c.quiet(100 * time.Millisecond)
	}
}

func TestBinaryAuth(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--jwt-secret", ibSecret)
	pub := ibDialJSON(t, s, ibToken(t, "pub", ibGrants{Publish: []string{"private-*"}}))
	c := ibDialBin(t, s, "")
	c.binRefused(1, ibBinSub(1, "private-a"), ibUnauthorized)
	c.binRefused(2, ibBinAuth(2, "garbage"), ibUnauthorized)
	expired := ibSign(t, jwt.SigningMethodHS256, []byte(ibSecret), ibClaims("x", time.Now().Add(-time.Minute), ibGrants{}))
	c.binRefused(3, ibBinAuth(3, expired), ibTokenExpired)
	c.binOK(4, ibBinAuth(4, ibToken(t, "bin-user", ibGrants{Subscribe: []string{"private-a"}})))
	c.binOK(5, ibBinSub(5, "private-a"))
	c.binRefused(6, ibBinSub(6, "private-b"), ibForbidden)
	c.binRefused(7, ibBinPub(7, "private-a", []byte(`1`), false), ibForbidden)
	c.binRefused(8, ibBinBroadcast(8, []byte(`1`), false), ibForbidden)
	pub.pub(1, "private-a", `{"secret":true}`)
	c.expectMsg("private-a", pub.ID, `{"secret":true}`)
	// Token at the handshake of a binary connection (query and header).
	d := ibDial(t, s, ibDialOpts{Query: "proto=bin&token=" + ibToken(t, "q", ibGrants{Subscribe: []string{"private-a"}})})
	d.binOK(1, ibBinSub(1, "private-a"))
	ibRefused(t, s, ibDialOpts{Query: "proto=bin&token=garbage"}, http.StatusUnauthorized)
}

func TestBinaryBroadcastSmaller(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--jwt-secret", ibSecret)
	sender := ibDialJSON(t, s, ibToken(t, "s", ibGrants{Broadcast: true}))
	j := ibDialJSON(t, s, "")
	b := ibDialBin(t, s, "")
	data := `{"text":"hello everyone","level":2}`
	sender.ok(1, fmt.Sprintf(`{"id":1,"op":"broadcast","data":%s}`, data))
	jf, bf := j.next(), b.next()
	if jf.typ != websocket.TextMessage || bf.typ != websocket.BinaryMessage {
		t.Fatalf("got %s and %s, want a text and a binary message", describeIB(jf), describeIB(bf))
	}
	if m, err := ibDecode(bf.p); err != nil || m.Op != 0x14 || string(m.Data) != data {
		t.Fatalf("binary broadcast %s (%v), want data %s", describeIB(bf), err, data)
	}
	t.Logf("broadcast of %d data bytes: JSON payload %d bytes, binary payload %d bytes", len(data), len(jf.p), len(bf.p))
	if len(bf.p) >= len(jf.p) {
		t.Fatalf("binary broadcast is %d bytes, JSON %d: binary must be smaller", len(bf.p), len(jf.p))
	}
	if want := len(jf.p) - len(bf.p); want < len(`{"op":"message","from":"","data":}`)-4 {
		t.Errorf("binary saves only %d bytes", want)
	}
}

// TestBinarySizeTable measures the payloads of typical server messages in both
// protocols on a live server and logs a table for PROTOCOL.md.
func TestBinarySizeTable(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--jwt-secret", ibSecret)
	pub := ibDialJSON(t, s, ibToken(t, "p", ibGrants{Broadcast: true}))
	j := ibDialJSON(t, s, "")
	b := ibDialBin(t, s, "")

	type row struct {
		name      string
		json, bin int
	}
	var rows []row
	add := func(name string, jf, bf ibFrame) {
		t.Helper()
		if jf.typ != websocket.TextMessage || bf.typ != websocket.BinaryMessage {
			t.Fatalf("%s: got %s and %s, want text and binary", name, describeIB(jf), describeIB(bf))
		}
		if _, err := ibDecode(bf.p); err != nil {
			t.Fatalf("%s: malformed binary % x: %v", name, bf.p, err)
		}
		rows = append(rows, row{name, len(jf.p), len(bf.p)})
	}
	add("welcome", ibFrame{websocket.TextMessage, j.Welcome}, ibFrame{websocket.BinaryMessage, b.Welcome})

	j.send(`{"id":1,"op":"subscribe","channel":"news"}`)
	b.sendBin(ibBinSub(1, "news"))
	add("ack (id 1)", j.next(), b.next())

	pub.pub(1, "news", `{"text":"hi"}`)
	add(`message on "news", data {"text":"hi"}`, j.next(), b.next())

	pub.ok(2, `{"id":2,"op":"broadcast","data":{"text":"hi"}}`)
	add(`broadcast, data {"text":"hi"}`, j.next(), b.next())

	j.send(`{"id":2,"op":"subscribe","channel":"private-x"}`)
	b.sendBin(ibBinSub(2, "private-x"))
	add("error unauthorized (id 2)", j.next(), b.next())

	j.send(`{"op":"ping"}`)
	b.sendBin(ibBinPing())
	add("pong", j.next(), b.next())

	var tbl strings.Builder
	fmt.Fprintf(&tbl, "server → client payload sizes (conn id %d bytes, node id %d bytes; add 2 bytes of frame header below 126):\n\n", len(j.ID), len(j.Node))
	tbl.WriteString("| message | JSON bytes | binary bytes | binary saves |\n|---|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Fprintf(&tbl, "| %s | %d | %d | %.0f%% |\n", r.name, r.json, r.bin, 100*float64(r.json-r.bin)/float64(r.json))
	}
	// Client → server requests, encoded here (a client frame adds 6 bytes: header and mask).
	tbl.WriteString("\nclient → server payload sizes:\n\n| request | JSON bytes | binary bytes | binary saves |\n|---|---:|---:|---:|\n")
	for _, r := range []struct {
		name string
		json string
		bin  []byte
	}{
		{`subscribe "news" (id 1)`, `{"id":1,"op":"subscribe","channel":"news"}`, ibBinSub(1, "news")},
		{`publish "news" {"text":"hi"} (id 2)`, `{"id":2,"op":"publish","channel":"news","data":{"text":"hi"}}`, ibBinPub(2, "news", []byte(`{"text":"hi"}`), false)},
		{`broadcast {"text":"hi"} (id 3)`, `{"id":3,"op":"broadcast","data":{"text":"hi"}}`, ibBinBroadcast(3, []byte(`{"text":"hi"}`), false)},
		{"ping", `{"op":"ping"}`, ibBinPing()},
	} {
		fmt.Fprintf(&tbl, "| %s | %d | %d | %.0f%% |\n", r.name, len(r.json), len(r.bin), 100*float64(len(r.json)-len(r.bin))/float64(len(r.json)))
	}
	t.Logf("JSON vs binary sizes, measured on a live server:\n%s", tbl.String())
	for _, r := range rows {
		if r.bin >= r.json {
			t.Errorf("%s: binary %d bytes is not smaller than JSON %d bytes", r.name, r.bin, r.json)
		}
	}
	msg := rows[2]
	if saving := float64(msg.json-msg.bin) / float64(msg.json); saving < 0.30 {
		t.Errorf("%s: binary %d bytes vs JSON %d bytes saves %.0f%%, want at least 30%%", msg.name, msg.bin, msg.json, 100*saving)
	}
}
