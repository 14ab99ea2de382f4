package engine

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
)

// SetClientCAs makes the TLS configuration of c (TLSConfig, called after
// this) require of every client a certificate signed by one of the CAs
// that load reads from file (tls.RequireAndVerifyClientCert), and reload
// them with the certificate: on Reload and when file changes. A CA file
// that fails to load then keeps the CAs in use. Handshakes get the CAs
// through GetConfigForClient: a copy of the configuration made at each
// reload, so a reload touches no handshake in progress.
func (c *CertFiles) SetClientCAs(file string, load func() (*x509.CertPool, error)) error {
	pool, err := load()
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.caFile, c.loadCA, c.initialCAs = file, load, pool
	c.stamp = c.stamps()
	return nil
}

// usePoolLocked makes the configuration handshakes get, with pool as the
// client CAs and the session-ticket keys in use.
func (c *CertFiles) usePoolLocked(pool *x509.CertPool) {
	cfg := c.base.Clone()
	cfg.GetConfigForClient = nil
	cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	if len(c.keys) > 0 {
		cfg.SetSessionTicketKeys(c.keys)
	}
	c.perClient.Store(cfg)
}

// configForClient is tls.Config.GetConfigForClient with client CAs.
func (c *CertFiles) configForClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	return c.perClient.Load(), nil
}

// ClientCAs returns the client CAs in use, nil without SetClientCAs.
func (c *CertFiles) ClientCAs() *x509.CertPool {
	if cfg := c.perClient.Load(); cfg != nil {
		return cfg.ClientCAs
	}
	return nil
}

// reloadCAsLocked is Reload for the client CAs.
func (c *CertFiles) reloadCAsLocked(log *slog.Logger, why string) error {
	if c.loadCA == nil || c.base == nil {
		return nil
	}
	pool, err := c.loadCA()
	if err != nil {
		if log != nil {
			log.Error("TLS client CAs not reloaded: the CAs in use stay", "reason", why, "file", c.caFile, "err", err)
		}
		return err
	}
	c.usePoolLocked(pool)
	if log != nil {
		log.Info("TLS client CAs reloaded", "reason", why, "file", c.caFile)
	}
	return nil
}

// SetTicketKeys makes keys the session-ticket keys of the TLS
// configuration of c (tls.Config.SetSessionTicketKeys: the first seals new
// tickets, all of them open tickets), the copy with the client CAs
// included.
func (c *CertFiles) SetTicketKeys(keys [][32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.keys = keys
	if c.base != nil {
		c.base.SetSessionTicketKeys(keys)
	}
	if cfg := c.perClient.Load(); cfg != nil {
		cfg.SetSessionTicketKeys(keys)
	}
}
