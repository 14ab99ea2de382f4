package store

import (
	"bytes"
	"reflect"
	"testing"
	"time"
)

// FuzzDecode feeds arbitrary bytes to the value decoders: they must not
// panic nor allocate from a length they have not checked, and whatever
// decodes must encode and decode again to the same value. key is the
// audit key, so that both its length check and its fields are fuzzed.
func FuzzDecode(f *testing.F) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC)
	key := auditKey(nil, at.UnixNano(), 42)
	for _, r := range []Record{
		{},
		fullRecord(1, at),
		fullRecord(2, at),
		{Op: OpPublish, Channel: "ch", Data: bytes.Repeat([]byte{0xff}, 300)},
	} {
		f.Add(key, encodeRecord(nil, &r))
	}
	for _, se := range []Session{
		{},
		{Conn: "c", Node: "n", Worker: -1, User: "u", Remote: "r", UserAgent: "ua", Protocol: "json",
			Connected: at, Disconnected: at.Add(time.Hour), CloseCode: 1006, Channels: []string{"a", "", "c"}},
	} {
		f.Add(key, encodeSession(nil, &se))
	}
	// Absurd lengths: a string, the data and the channel count claim far
	// more bytes than follow.
	f.Add(key, []byte{valueVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add(key, []byte{valueVersion, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 'x'})
	f.Add(key, []byte{valueVersion, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Add(key[:16], []byte{valueVersion})
	f.Add([]byte{}, []byte{})
	f.Add(key, []byte{2})

	f.Fuzz(func(t *testing.T, k, v []byte) {
		var r Record
		if err := decodeRecord(k, v, &r); err == nil {
			var again Record
			if err := decodeRecord(k, encodeRecord(nil, &r), &again); err != nil {
				t.Fatalf("re-encoded record does not decode: %v", err)
			}
			if !reflect.DeepEqual(r, again) {
				t.Fatalf("record changed on re-encoding:\n%+v\n%+v", r, again)
			}
		}
		var se Session
		if err := decodeSession(v, &se); err == nil {
			var again Session
			if err := decodeSession(encodeSession(nil, &se), &again); err != nil {
				t.Fatalf("re-encoded session does not decode: %v", err)
			}
			if !reflect.DeepEqual(se, again) {
				t.Fatalf("session changed on re-encoding:\n%+v\n%+v", se, again)
			}
		}
	})
}

// TestDecodeTruncated cuts valid values at every length: only the whole
// value decodes.
func TestDecodeTruncated(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC)
	rec := fullRecord(1, at)
	rec.Seq = 42
	rec.Scheme, rec.TLSVersion, rec.TLSCipher = "wss", "TLS 1.2", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
	key := auditKey(nil, at.UnixNano(), rec.Seq)
	v := encodeRecord(nil, &rec)
	for n := range len(v) {
		var r Record
		if err := decodeRecord(key, v[:n], &r); err == nil {
			t.Fatalf("record cut to %d of %d bytes decoded", n, len(v))
		}
	}
	var r Record
	if err := decodeRecord(key, v, &r); err != nil || !reflect.DeepEqual(r, rec) {
		t.Fatalf("decodeRecord = %+v, %v; want %+v", r, err, rec)
	}
	if err := decodeRecord(key, append(v, 0), &r); err == nil {
		t.Fatalf("record with a trailing byte decoded")
	}

	se := Session{Conn: "c", User: "u", Connected: at, Disconnected: at.Add(time.Second), CloseCode: 1000, Channels: []string{"a", "b"},
		Scheme: "wss", TLSVersion: "TLS 1.3", TLSCipher: "TLS_AES_128_GCM_SHA256"}
	v = encodeSession(nil, &se)
	for n := range len(v) {
		var got Session
		if err := decodeSession(v[:n], &got); err == nil {
			t.Fatalf("session cut to %d of %d bytes decoded", n, len(v))
		}
	}
	var got Session
	if err := decodeSession(v, &got); err != nil || !reflect.DeepEqual(got, se) {
		t.Fatalf("decodeSession = %+v, %v; want %+v", got, err, se)
	}
	// A session of version 1 ends after its channels and has no scheme.
	plain := se
	plain.Scheme, plain.TLSVersion, plain.TLSCipher = "", "", ""
	v1 := encodeSession(nil, &plain)
	v1 = append([]byte{valueVersion}, v1[1:len(v1)-3]...)
	if err := decodeSession(v1, &got); err != nil || !reflect.DeepEqual(got, plain) {
		t.Fatalf("decodeSession of version 1 = %+v, %v; want %+v", got, err, plain)
	}
	if err := decodeSession(append(v1, 0, 0, 0), &got); err == nil {
		t.Fatalf("session of version 1 with a tail decoded")
	}
}
