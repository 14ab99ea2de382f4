package engine

import (
	"sync"
	"testing"
	"unsafe"

	"github.com/gobwas/ws"
)

// TestOutMsgEncodesOncePerProtocol: however many loops ask for a message's
// frame, concurrently, each protocol's frame is built once and every caller
// gets the very same bytes.
func TestOutMsgEncodesOncePerProtocol(t *testing.T) {
	m := newOutMsg("news", "k1", []byte(`{"x":1}`), false)
	const callers = 16
	var wg sync.WaitGroup
	got := make([][2][]byte, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = [2][]byte{m.frame(false), m.frame(true)}
		}()
	}
	wg.Wait()
	for i := 1; i < callers; i++ {
		for p := range 2 {
			if unsafe.SliceData(got[i][p]) != unsafe.SliceData(got[0][p]) || len(got[i][p]) != len(got[0][p]) {
				t.Fatalf("caller %d got a different frame for protocol %d: encoded more than once", i, p)
			}
		}
	}
	if op := ws.OpCode(got[0][0][0] & 0x0f); op != ws.OpText {
		t.Fatalf("JSON frame opcode %v", op)
	}
	if op := ws.OpCode(got[0][1][0] & 0x0f); op != ws.OpBinary {
		t.Fatalf("binary frame opcode %v", op)
	}
}

// TestOutMsgCopiesData: the message owns its data, so the publisher's read
// buffer can be reused while other loops still deliver it.
func TestOutMsgCopiesData(t *testing.T) {
	in := []byte(`{"x":1}`)
	m := newOutMsg("news", "k1", in, false)
	copy(in, `{"y":2}`)
	if string(m.data) != `{"x":1}` {
		t.Fatalf("data aliases the input: %s", m.data)
	}
}
