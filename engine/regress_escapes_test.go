package engine

// Regression test for a defect found by FuzzDecodeJSON: data with an invalid
// escape inside a long string passed the decoder and reached every JSON
// subscriber verbatim (see proto/regress_escapes_test.go). The FuzzFrames
// seeds crasher-json-bad-escape and crasher-bin-bad-escape cover it too.

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	"github.com/zenconn/server/proto"
)

// Was: a publisher can make every JSON subscriber of a channel receive a
// frame that is not JSON: sonic skips a raw string of 32 bytes or more
// without checking its escapes, and DecodeBinary's sonic Valid checks none,
// so data such as "\q…" is accepted and fanned out verbatim.
func TestBugInvalidJSONReachesSubscribers(t *testing.T) {
	s := newTestServer(t, Config{})
	l, e := newTestLoop(t, s)
	sub := newConnDriver(t, s, l, e)
	upgrade(t, sub)
	sendText(t, sub, `{"op":"subscribe","channel":"c"}`)

	jpub := newConnDriver(t, s, l, e)
	upgrade(t, jpub)
	jpub.feed(clientFrame(true, ws.OpText, []byte(`{"op":"publish","channel":"c","data":"\q`+strings.Repeat("a", 31)+`"}`)))

	bpub := newConnDriver(t, s, l, e)
	bpub.feed([]byte(upgradeRequestFor(true)))
	bpub.feed(clientFrame(true, ws.OpBinary, append([]byte{proto.BinPublish, 1, 'c'}, `"\q"`...)))

	for _, f := range readServerFrames(t, sub.t.takeOut()) {
		if f.Header.OpCode == ws.OpText && !json.Valid(f.Payload) {
			t.Errorf("JSON subscriber received a text frame that is not JSON: %s", f.Payload)
		}
	}
	for _, d := range []*connDriver{sub, jpub, bpub} {
		d.close()
	}
}
