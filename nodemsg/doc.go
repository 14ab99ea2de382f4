// Package nodemsg is the second wire protocol of ZenConn, after the one
// between clients and the server (PROTOCOL.md): the records that a node's
// agent and its workers exchange over the shared-memory rings of package
// link. It owns the record layout, its encoders (AppendX) and its decoder
// (Decode), and the limits both sides share: MaxWorkers and the Stats a
// worker reports.
//
// # Framing
//
// A ring (package shm) carries whole records and knows their length, so a
// record has no length prefix of its own: it is one kind byte, then the
// fields of that kind in a fixed order, then nothing. A record with bytes
// left over, a field cut short or an unknown kind is malformed.
//
//	┌──────┬──────────────────────────────────┐
//	│ kind │ fields of the kind, in order     │   one ring record
//	└──────┴──────────────────────────────────┘
//	  u8
//
// Kinds are numbered in decimal below (Done is 20, the byte 0x14). Field
// encodings:
//
//	u8        one byte
//	uvarint   an unsigned varint (encoding/binary.AppendUvarint): 7 bits a
//	          byte, least significant first, high bit set on every byte but
//	          the last; 1 to 10 bytes
//	str       the length in bytes as a uvarint, then the bytes (strings are
//	          not checked for UTF-8)
//	bytes     as str, for opaque or JSON payloads
//	flags     u8: bit 0 (FlagOpaque) set when data is opaque bytes rather
//	          than JSON text; the other bits are zero
//
// For example, Closed of connection "c1" with code 4001 is the six bytes
//
//	03  02 63 31  a1 1f
//	kind conn="c1" code=4001
//
// testdata/records.txt holds one such vector per record kind; the tests
// encode and decode every one of them.
//
// # Versioning
//
// None: the agent starts its workers from its own executable, so both
// ends always run the same build. Kinds and field orders may change from
// one release to the next; nothing of this protocol is stored or crosses
// the node.
//
// # Worker → agent
//
// On the ring of the event loop that holds the connection, except Ready
// and Stats, which come from the worker's housekeeping ring.
//
// Ready: the worker serves (once per process). worker is its id,
// 0 to MaxWorkers-1.
//
//	Ready     ┌──────┬─────────┬─────────┐
//	          │  1   │  worker │   pid   │
//	          └──────┴─────────┴─────────┘
//	            kind   uvarint   uvarint
//
// Opened: a WebSocket connection is open. proto is "json" or "bin";
// tlsVer and cipher are the TLS version and cipher suite the connection
// agreed on, as crypto/tls numbers them (0x0304 is TLS 1.3, 0x1301
// TLS_AES_128_GCM_SHA256), both 0 for a plain-text connection; each fits
// 16 bits (a larger value is malformed).
//
//	Opened    ┌──────┬──────┬──────┬────────┬───────────┬───────┬─────────┬─────────┐
//	          │  2   │ conn │ user │ remote │ userAgent │ proto │  tlsVer │  cipher │
//	          └──────┴──────┴──────┴────────┴───────────┴───────┴─────────┴─────────┘
//	            kind   str    str     str        str       str    uvarint   uvarint
//
// Closed: a WebSocket connection ended with this close code.
//
//	Closed    ┌──────┬──────┬─────────┐
//	          │  3   │ conn │   code  │
//	          └──────┴──────┴─────────┘
//	            kind   str    uvarint
//
// User: the connection's user changed (authentication, token expiry).
//
//	User      ┌──────┬──────┬──────┐
//	          │  8   │ conn │ user │
//	          └──────┴──────┴──────┘
//	            kind   str    str
//
// Sub: the connection joined channel. A token other than 0 asks for a Done
// with that token once the subscription is live on the whole node (and,
// with durable acks, its audit record is written).
//
//	Sub       ┌──────┬─────────┬──────┬─────────┐
//	          │  4   │  token  │ conn │ channel │
//	          └──────┴─────────┴──────┴─────────┘
//	            kind   uvarint   str      str
//
// Unsub: the connection left channel.
//
//	Unsub     ┌──────┬──────┬─────────┐
//	          │  5   │ conn │ channel │
//	          └──────┴──────┴─────────┘
//	            kind   str      str
//
// Publish: connection from published data on channel (empty channel: a
// broadcast). A token other than 0 asks for a Done once the audit record
// is durable.
//
//	Publish   ┌──────┬─────────┬─────────┬──────┬───────┬───────┐
//	          │  6   │  token  │ channel │ from │ flags │  data │
//	          └──────┴─────────┴─────────┴──────┴───────┴───────┘
//	            kind   uvarint     str     str      u8    bytes
//
// Refused: an attempt turned down (op and the error code sent back; conn
// and user empty for a refused handshake, remote set then), for the audit
// log.
//
//	Refused   ┌──────┬──────┬──────┬─────┬─────────┬──────┬────────┬───────┬───────┐
//	          │  9   │ conn │ user │  op │ channel │ code │ remote │ flags │  data │
//	          └──────┴──────┴──────┴─────┴─────────┴──────┴────────┴───────┴───────┘
//	            kind   str    str    str     str     str     str       u8    bytes
//
// Stats: the worker's counters, every second: the fields of Stats in
// order (Connections, Subscriptions, MessagesIn, MessagesOut, BytesIn,
// BytesOut, SlowClosed).
//
//	Stats     ┌──────┬─────────┬─────────┬─────────┬─────────┬─────────┬──────────┬─────────┐
//	          │  7   │  conns  │   subs  │  msgsIn │ msgsOut │ bytesIn │ bytesOut │   slow  │
//	          └──────┴─────────┴─────────┴─────────┴─────────┴─────────┴──────────┴─────────┘
//	            kind   uvarint   uvarint   uvarint   uvarint   uvarint   uvarint    uvarint
//
// # Agent → worker
//
// Done: the answer to a Sub or Publish token; failed is 1 when the audit
// record could not be written, else 0.
//
//	Done      ┌──────┬─────────┬────────┐
//	          │  20  │  token  │ failed │
//	          └──────┴─────────┴────────┘
//	            kind   uvarint     u8
//
// Deliver: a message published elsewhere on the node, for this worker's
// subscribers of channel (every connection for an empty channel).
//
//	Deliver   ┌──────┬─────────┬──────┬───────┬───────┐
//	          │  21  │ channel │ from │ flags │  data │
//	          └──────┴─────────┴──────┴───────┴───────┘
//	            kind     str     str      u8    bytes
//
// Kick: close connection conn with 4100 (the server API's disconnect).
//
//	Kick      ┌──────┬──────┐
//	          │  22  │ conn │
//	          └──────┴──────┘
//	            kind   str
//
// Evict: close connection conn with close code code (a node-wide limit,
// such as connections per user, that the agent enforces).
//
//	Evict     ┌──────┬──────┬─────────┐
//	          │  23  │ conn │  code   │
//	          └──────┴──────┴─────────┘
//	            kind   str    uvarint
//
// Tickets: the TLS session-ticket keys of the node, for
// tls.Config.SetSessionTicketKeys: keys is the keys of TicketKeySize (32)
// bytes each, one after the other, the newest first (it seals new
// tickets, all of them open tickets); 1 to MaxTicketKeys keys, so its
// length is a multiple of 32 from 32 to 2048 (else the record is
// malformed). The agent sends it as the first record to every worker
// process it starts, before any other, and to every worker again each
// time it rotates the keys, so that every worker of the node resumes the
// sessions any of them started. These keys exist only in the memory of
// the agent and its workers (the rings are memory shared by those
// processes alone).
//
//	Tickets   ┌──────┬─────────┐
//	          │  24  │   keys  │
//	          └──────┴─────────┘
//	            kind    bytes
//
// # Use
//
// Encoders append to dst and return it, so a caller reuses one buffer per
// ring. Decode never panics on malformed input; the strings of a decoded
// Msg are copies, its Data aliases the record (valid only while the ring's
// Read callback runs). The package has no state: everything in it is safe
// for concurrent use.
package nodemsg
