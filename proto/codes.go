package proto

// Error is a protocol error reported to a client in an error envelope.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return "proto: " + e.Code + ": " + e.Message }

// Error codes carried by {"op":"error","code":...}. They are a contract:
// see PROTOCOL.md. Every one of them leaves the connection open.
const (
	// CodeBadRequest: the request could not be understood (invalid JSON,
	// unknown op, missing or invalid field). Do not retry unchanged.
	CodeBadRequest = "bad_request"
	// CodeLimitExceeded: a per-connection limit was reached (for example
	// the number of subscriptions). Do not retry unchanged.
	CodeLimitExceeded = "limit_exceeded"
	// CodeUnauthorized: the operation needs a valid token.
	CodeUnauthorized = "unauthorized"
	// CodeForbidden: the token does not grant the operation.
	CodeForbidden = "forbidden"
	// CodeTokenExpired: the connection's token expired; its grants are gone.
	CodeTokenExpired = "token_expired"
	// CodeOverloaded: the server could not take the request now; retry later.
	CodeOverloaded = "overloaded"
	// CodeInternal: a server fault; retry later.
	CodeInternal = "internal"
	// CodeRateLimited: the connection sent ops of this kind faster than
	// its rate limit; the op was not performed. Retry after slowing down.
	CodeRateLimited = "rate_limited"
)

// WebSocket close codes the server sends (RFC 6455 section 7.4). Codes
// 4000-4099 are ZenConn's temporary conditions: the client may reconnect
// (with backoff). Codes 4100-4199 are reserved for terminal conditions: do
// not reconnect without changing something.
const (
	CloseNormal          = 1000 // echoed to a client's normal close
	CloseGoingAway       = 1001 // the server is shutting down; reconnect
	CloseProtocolError   = 1002 // RFC 6455 framing violation
	CloseUnsupportedData = 1003 // a binary frame on a JSON connection
	CloseInvalidPayload  = 1007 // a text message that is not valid UTF-8
	CloseMessageTooBig   = 1009 // a message over the server's --max-message
	CloseInternalError   = 1011 // a server fault
	CloseTryAgainLater   = 1013 // the node's input budget is full; retry later
	CloseIdleTimeout     = 4000 // nothing received within --idle-timeout
	CloseSlowConsumer    = 4001 // outbound buffer over --max-outbound
	CloseTokenExpired    = 4002 // token expired where anonymous connections are refused
	CloseMessageTimeout  = 4004 // a message not completed within --message-timeout
	CloseRateLimited     = 4008 // kept sending past rate_limited errors
	CloseUserLimit       = 4009 // the user has too many connections on the node
	CloseDisconnected    = 4100 // disconnected through the server API
)

// MaxChannelLen is the longest valid channel name in bytes.
const MaxChannelLen = 128

var channelByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "_.:@-" {
		t[c] = true
	}
	return t
}()

// ValidChannel reports whether s is a valid channel name: 1 to 128 bytes of
// [A-Za-z0-9_.:@-].
func ValidChannel(s string) bool {
	if len(s) == 0 || len(s) > MaxChannelLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !channelByte[s[i]] {
			return false
		}
	}
	return true
}
