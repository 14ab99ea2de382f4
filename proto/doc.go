// Package proto holds ZenConn's wire protocol: the JSON envelope (v1) that
// clients and the server exchange inside WebSocket messages, the channel-name
// rules, and the error and close codes that form the documented contract in
// PROTOCOL.md.
//
// The package imports only the standard library and the JSON codec (sonic).
// It knows nothing about connections or event loops: decoders read a byte
// slice and encoders append to one (AppendX(dst, ...) []byte), so the same
// code serves the engine on the workers, the agent and the tests.
//
// Concurrency: every function is safe for concurrent use; a ClientMsg is not.
//
// Server envelopes are assembled by appending bytes around values that are
// already valid JSON (a publisher's data is validated once by the decoder and
// then copied verbatim), so a fan-out never re-encodes the payload. Strings
// that come from outside (error messages) are escaped by sonic.
package proto
