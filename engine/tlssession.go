package engine

import "crypto/tls"

// DefaultMaxTLSHandshakes is Config.MaxTLSHandshakes's default, and
// MaxTLSHandshakesLimit its largest value: each handshake in progress is
// a goroutine and up to 32 KiB of held input.
const (
	DefaultMaxTLSHandshakes = 1024
	MaxTLSHandshakesLimit   = 65536
)

// tlsDone keeps what the session records of a connection's TLS (the
// version and cipher suite, as numbers: four bytes on the connection), on
// the loop once its handshake is done.
func (c *Conn) tlsDone(st tls.ConnectionState) {
	c.tlsVersion, c.tlsCipher = st.Version, st.CipherSuite
}

// SetTicketKeys makes keys the session-ticket keys of c.TLS (see
// tls.Config.SetSessionTicketKeys: the first seals new tickets, all of
// them open tickets), through c.TLSCertificates when it is set. Every
// worker of a node sets the same keys, so that any of them resumes a
// session another started. Safe while the server runs; without TLS it
// does nothing.
func (c *Config) SetTicketKeys(keys [][32]byte) {
	switch {
	case len(keys) == 0 || c.TLS == nil:
	case c.TLSCertificates != nil:
		c.TLSCertificates.SetTicketKeys(keys)
	default:
		c.TLS.SetSessionTicketKeys(keys)
	}
}
