package engine

import (
	"sync"

	"github.com/gobwas/ws"
	"github.com/zenconn/server/proto"
)

// outMsg is one published message on its way to subscribers: a channel
// message, or a broadcast when channel is empty. It is shared by every loop
// that delivers it and immutable once built, except for its frames, each
// encoded at most once (on first need) per wire protocol.
type outMsg struct {
	channel string // "" for a broadcast
	from    string // publisher's connection id, or "api"
	data    []byte // JSON text, or opaque bytes when opaque is set
	opaque  bool

	jsonOnce, binOnce   sync.Once
	jsonFrame, binFrame []byte
}

// newOutMsg copies data, which usually aliases a read buffer.
func newOutMsg(channel, from string, data []byte, opaque bool) *outMsg {
	return &outMsg{channel: channel, from: from, data: append([]byte(nil), data...), opaque: opaque}
}

// frame returns the complete WebSocket frame for the given protocol.
func (m *outMsg) frame(bin bool) []byte {
	if bin {
		m.binOnce.Do(func() {
			buf := newFrameBuf(make([]byte, 0, frameHeadroom+4+len(m.channel)+len(m.from)+len(m.data)))
			m.binFrame = finishFrame(proto.AppendBinMessage(buf, m.channel, m.from, m.data, m.opaque), ws.OpBinary)
		})
		return m.binFrame
	}
	m.jsonOnce.Do(func() {
		size := frameHeadroom + 64 + len(m.channel) + len(m.from) + len(m.data)
		if m.opaque {
			size += len(m.data)/3 + 20
		}
		buf := newFrameBuf(make([]byte, 0, size))
		m.jsonFrame = finishFrame(proto.AppendMessageAny(buf, m.channel, m.from, m.data, m.opaque), ws.OpText)
	})
	return m.jsonFrame
}
