package proto

import (
	"bytes"
	"encoding/binary"
	"strconv"

	"github.com/bytedance/sonic"
)

// The decoders as they were before the hand-written JSON scanner, kept as
// test-only references: FuzzDecodeJSONReference and FuzzDecodeBinaryReference
// compare the production decoders with them on every input, and the decode
// benchmarks run them side by side. They copy Channel and Token (sonic
// copies strings; the old DecodeBinary converted them to strings).

// wireClient is the JSON shape sonic decodes into.
type wireClient struct {
	ID      sonic.NoCopyRawMessage `json:"id"`
	Op      string                 `json:"op"`
	Channel *string                `json:"channel"`
	Data    sonic.NoCopyRawMessage `json:"data"`
	Token   string                 `json:"token"`
}

// decodeJSONReference is the sonic-based DecodeJSON. Sonic (ConfigStd,
// JIT on amd64) matches keys exactly, then by strings.ToLower; keeps the
// last of duplicate keys (a null leaves a string as it was and makes a
// pointer nil); decodes a copy of input that is not UTF-8 with every
// invalid byte replaced by U+FFFD; and checks escape sequences only in
// some positions of long strings that it skips (see hasBadEscape).
func decodeJSONReference(data []byte, m *ClientMsg) *Error {
	*m = ClientMsg{}
	var w wireClient
	if err := jsonAPI.Unmarshal(data, &w); err != nil {
		// Valid JSON with a field of the wrong type still gets its id
		// back in the error reply, so the client can correlate it.
		var idOnly struct {
			ID sonic.NoCopyRawMessage `json:"id"`
		}
		if jsonAPI.Unmarshal(data, &idOnly) == nil && validID(idOnly.ID) && strictStrings(idOnly.ID) {
			m.ID = idOnly.ID
			return errBadField
		}
		return errBadJSON
	}
	if len(w.ID) > 0 {
		if !validID(w.ID) || !strictStrings(w.ID) {
			return errBadID
		}
		m.ID = w.ID
	}
	if w.Data != nil && !strictStrings(w.Data) {
		return errBadData
	}
	m.Op = parseOp([]byte(w.Op))
	switch m.Op {
	case OpUnknown:
		if w.Op == "" {
			return errNoOp
		}
		return errUnknownOp
	case OpSubscribe, OpUnsubscribe, OpPublish:
		if w.Channel == nil {
			return errNoChannel
		}
		if !ValidChannel(*w.Channel) {
			return errBadChannel
		}
		m.Channel = []byte(*w.Channel)
		if m.Op == OpPublish {
			if w.Data == nil {
				return errNoData
			}
			m.Data = w.Data
		}
	case OpBroadcast:
		if w.Data == nil {
			return errNoData
		}
		m.Data = w.Data
	case OpAuth:
		if w.Token == "" {
			return errNoToken
		}
		m.Token = []byte(w.Token)
	}
	return nil
}

// decodeBinaryReference is DecodeBinary as it was when ClientMsg carried
// Channel and Token as strings: the same checks, with copies.
func decodeBinaryReference(data []byte, m *ClientMsg) *Error {
	*m = ClientMsg{}
	if len(data) == 0 {
		return errBinEmpty
	}
	head := data[0]
	p := data[1:]
	if head&binFlagID != 0 {
		id, n := binary.Uvarint(p)
		if n <= 0 || id >= 1<<63 {
			return errBinTruncated
		}
		m.ID = strconv.AppendUint(m.idBuf[:0], id, 10)
		p = p[n:]
	}
	if head&binFlagRsv != 0 {
		return errBinReserved
	}
	opaque := head&binFlagOpaque != 0
	op := head & binOpMask
	switch op {
	case BinSubscribe, BinUnsubscribe, BinPublish:
		ch, rest, ok := readStr8(p)
		if !ok {
			return errBinTruncated
		}
		if !ValidChannel(string(ch)) {
			return errBadChannel
		}
		m.Channel = bytes.Clone(ch)
		p = rest
		m.Op = OpSubscribe
		if op == BinUnsubscribe {
			m.Op = OpUnsubscribe
		}
		if op == BinPublish {
			m.Op = OpPublish
			return setDataReference(m, p, opaque)
		}
	case BinBroadcast:
		m.Op = OpBroadcast
		return setDataReference(m, p, opaque)
	case BinAuth:
		m.Op = OpAuth
		if len(p) == 0 {
			return errNoToken
		}
		m.Token = bytes.Clone(p)
		p = nil
	case BinPing:
		m.Op = OpPing
	default:
		return errUnknownOp
	}
	if opaque {
		return errBinFlag
	}
	if len(p) != 0 {
		return errBinTrailing
	}
	return nil
}

// setDataReference is ClientMsg.setData as it was: JSON data checked by
// ValidRaw (sonic's Valid and strictStrings).
func setDataReference(m *ClientMsg, p []byte, opaque bool) *Error {
	if p == nil {
		p = []byte{}
	}
	if !opaque {
		if len(p) == 0 {
			return errNoData
		}
		if !ValidRaw(p) {
			return errBinDataJSON
		}
	}
	m.Data = p
	m.Opaque = opaque
	return nil
}

// zeroPadded returns a copy of b followed in memory, past its length, by
// zero bytes. Sonic's Valid reads past the end of its input to finish a
// literal, so that ValidRaw(b[:1]) is true when b is "null" (see
// TestBugBinaryDataReadPastEnd): the fuzz tests give the references padded
// input, which ends any literal, to compare with a deterministic answer.
func zeroPadded(b []byte) []byte {
	c := make([]byte, len(b), len(b)+8)
	copy(c, b)
	return append(c, make([]byte, 8)...)[:len(b)]
}
