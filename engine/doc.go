// Package engine serves one ZenConn worker process's clients: HTTP requests
// and WebSocket sessions on event loops, the JSON and binary protocol ops,
// and the fan-out of published messages. It reaches the rest of the node
// (the agent: sessions, audit log, other workers, server API) only through
// its Bridge and the API proxy hook.
//
// # Who owns what
//
// Loops. The transport (gnet.go) runs Config.Loops event loops; each has
// its own listener, connections and a loop value (loop.go). Everything a
// loop holds (its connections, subscriber lists, dirty list, scratch
// buffers) is touched only on that loop's goroutine, without locks; the
// exceptions are the inbox (loop.mu) and the counters (atomics read by
// /metrics and Server.Stats).
//
// Conn (conn.go). One client connection, owned by its loop: Serve is called
// with input bytes, Writable when a full socket takes bytes again, Closed
// when the transport is gone; every method runs on the loop. A Conn reads
// HTTP requests (http.go), then after the handshake (handshake.go)
// WebSocket frames (ws.go) carrying protocol ops (ops.go).
//
// Input (input.go). Serve consumes all the bytes the transport read; a
// partial request or frame is copied into the connection's held input,
// which grows with the bytes received and is charged, with the fragments
// of a message in progress, to the process's input budget. Each phase of
// input (first request head, later head, body, message) has a deadline
// that the loop's periodic scan enforces.
//
// Deadlines (wheel.go). Each loop files its connections in a timing wheel
// of one-second slots by their next deadline (input phase, idle timeout,
// ping, token expiry, close grace): the scan, once a second, checks only
// the connections of the slots it reaches and files each again; a read
// only records its time, and a connection found not yet due is filed
// again then.
//
// hub (fanout.go). Shared by the loops: it knows which loops have
// subscribers of each channel (a bitmask per channel, under a RWMutex) and
// the list of loops. A message published on a loop is delivered on that
// loop at once (a burst's through that loop's own inbox) and posted to the
// inboxes of the other interested loops, which deliver it on their own
// goroutines; a drained inbox goes out as runs, consecutive messages of a
// channel in one piece per subscriber. The pass that writes them takes
// what is posted meanwhile, and every 5 ms yields to the loop's sockets
// (loop.flushDirty; Executor.Yield, gnetyield.go), so that a fan-out to
// tens of thousands never keeps a loop from reading. fanout.go is the whole path:
// outMsg (one encode per message and wire protocol), hub, delivery, the
// subscriber lists.
//
// Client limits (limits.go, proxy.go). A new transport connection is
// counted and paced under its client's address in a process-wide table
// (sharded, under mutexes: touched once per connection, never per
// message); a trusted proxy's connection is counted once its PROXY header
// or X-Forwarded-For names the client. Each connection carries token
// buckets for its publish, subscribe and auth ops, one number each, run
// on the loop with the time of the read being served. Users are counted
// per process at the handshake; the agent keeps the node-wide count.
//
// TLS (tls.go). With Config.TLS a connection's Transport is a tlsConn over
// its gnetConn. Its handshake runs on a goroutine of its own (bounded in
// number and by the handshake deadline) that reads what the loop hands it
// and writes through loop tasks; once it is done, the loop owns the
// tls.Conn: it decrypts the records it reads and encrypts every write,
// AsyncWrite's included (as a task), so tls.Conn is never used by two
// goroutines at once. crypto/tls is handed whole records only, and its
// input buffer is one the loop lends while it serves the connection
// (tlsbufs.go): an idle TLS connection holds its keys, no buffer. When
// the handshake is done the connection keeps its TLS version and cipher
// suite as two numbers (tlssession.go), which its session reports to the
// bridge. The certificate and the client CAs come
// from CertFiles (tlscert.go, tlsca.go), reloaded without touching a
// connection; the session-ticket keys are the node's, set by the worker
// with Config.SetTicketKeys.
//
// Bridge (bridge.go). The link to the node's agent, always present (a
// worker's goes over shared-memory rings; NopBridge serves tests). The
// engine calls it on loops, with the loop's index, and it never blocks.
// What it calls back (a subscription live on the node, a durable ack)
// comes from other goroutines and is turned into a loop task.
//
// Tasks from outside a loop. Code that is not on a loop never touches a
// loop's state: it queues a function with the loop's Executor (transport.go),
// which runs it on the loop in order. So do Server.Deliver (through the
// inboxes), Server.Kick, Server.Shutdown, the periodic scan (pings, idle
// and close deadlines) and the bridge's callbacks. HTTP responses that
// would stall a loop (static files read from disk, /metrics, the server
// API hand-over in apiproxy.go) are produced by file workers, which hand
// their bytes to the connection with Transport.AsyncWrite and finish on the
// loop.
//
// # Write paths of a connection
//
// A connection writes in as few syscalls as it can: frames are queued and
// go out together, one write (or writev) per connection per read or loop
// pass. Small frames are copied into Conn.out; a large fan-out frame is
// queued by reference to the outMsg's bytes, shared by every subscriber
// (outqueue.go). The verbs, all on the loop:
//
//   - queueFrame (and queueReply, which frames a reply built in the loop's
//     scratch first): copy a frame into the queue. The queue is flushed at
//     the end of the read being served (Conn.Serve), or by the loop's
//     end-of-pass flush task for connections marked dirty by others.
//   - queueShared: queue a fan-out frame, by reference when it is large.
//   - queueRun: queueShared for a run's frames, one piece for several
//     messages (deliverRun).
//   - writeOrQueue: fan-out delivery to an idle subscriber. The frame is
//     written at once when nothing is queued for the connection and it is
//     not the one being served; else it is queued like queueShared. The
//     loop chooses per message: an isolated message is written at once, a
//     burst is queued and coalesced (loop.burst).
//   - writeNow: bytes that are not frames (HTTP responses), written at
//     once after anything queued.
//   - flush: write the queue now, in one write.
//
// What the kernel does not take stays in the connection's queue, never in
// the transport's own buffer (Transport.Writev keeps nothing): the
// connection waits (Transport.WaitWritable; for gnet, the write watcher in
// gnetwritable.go) and Conn.Writable writes on. So a subscriber that stops
// reading pins references to shared frames, not copies of them.
//
// Past Config.MaxOutbound unsent bytes (copied, referenced and buffered by
// the transport: Conn.outPending), queueFrame, queueShared and
// writeOrQueue close the connection as a slow consumer (4001) instead:
// what is queued and the close frame go out if the kernel takes them now,
// and the connection is cut.
//
// Ending a connection:
//
//   - linger: flush, half-close (once the queue is written), and drain
//     input in the closing state until the peer closes or a grace period
//     ends. It follows a close frame the
//     server sends (Conn.fail) and a final HTTP response.
//   - closeAfterFlush: the server's side of a close handshake the client
//     started: the echoed close frame goes out behind what is queued, then
//     the socket is closed at once (RFC 6455 section 7.1.1), or it lingers
//     if the kernel did not take every byte.
//
// The handshake's 101 response and the welcome frame are queued together
// and leave in a single write.
package engine
