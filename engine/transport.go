package engine

import "net"

// Transport is the byte stream under one client connection, as the engine's
// HTTP, WebSocket and protocol code see it. gnet.go adapts gnet's Conn; a
// transport built on crypto/tls over net.Conn can drive the same code by
// implementing these few methods and calling Conn.Serve with input bytes.
// Serve consumes all the bytes it is given (what it cannot handle yet it
// holds itself, within the input budget), so a transport keeps no input.
//
// Unless a method says otherwise it is called only on the connection's loop
// (the goroutine that runs Serve for it).
type Transport interface {
	// Write queues p after everything written before and never blocks. p
	// may be reused as soon as Write returns.
	Write(p []byte)
	// Writev writes what the kernel takes now of the bytes of iov, in
	// order, and returns how many. Unlike Write it keeps nothing: the
	// caller holds the rest, calls WaitWritable and writes it on when
	// Conn.Writable runs. While bytes given to Write are still buffered it
	// writes nothing (their order is kept). An error means the connection
	// is broken; it is being closed.
	Writev(iov [][]byte) (int, error)
	// WaitWritable asks the transport to call Conn.Writable on the loop
	// once the socket can take more bytes and the bytes given to Write are
	// written. It is called after a Writev that wrote less than offered.
	WaitWritable()
	// Buffered returns the number of bytes written but not yet accepted by
	// the kernel.
	Buffered() int
	// CloseWrite half-closes the connection (TCP FIN) if nothing is still
	// queued; it is a hint, the close deadline ends the connection anyway.
	CloseWrite()
	// Close closes the connection. Safe from any goroutine.
	Close()
	// ResetOnClose makes the connection's close, or the process's exit,
	// reset it (TCP RST) rather than end it (FIN): the kernel drops what
	// is still unsent and keeps no state for it afterwards. Only from the
	// loop.
	ResetOnClose()
	// Wake asks the loop to call Serve again (with no new input), so that
	// the input the connection holds is served.
	// Safe from any goroutine.
	Wake()
	// AsyncWrite queues p from any goroutine; done then runs on the loop
	// with the number of bytes still buffered, or a non-nil error when the
	// connection is gone. p must not be modified after the call.
	AsyncWrite(p []byte, done func(buffered int, err error)) error
	// RemoteAddr is the peer's address. Safe from any goroutine.
	RemoteAddr() net.Addr
}

// Executor runs functions on one event loop, in submission order.
type Executor interface {
	// Execute queues fn to run on the loop. Safe from any goroutine.
	Execute(fn func()) error
	// Yield queues fn to run on the loop once it has served the sockets
	// ready by then (Execute's tasks may all run before any of them).
	// Only from the loop.
	Yield(fn func()) error
}
