package engine

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// CertPollInterval is how often a running server looks at its certificate
// files (Config.TLSCertificates) for a change.
const CertPollInterval = 2 * time.Second

// CertFiles is the certificate TLS serves, loaded from a certificate file
// and a key file and reloaded from them on Reload (SIGHUP) or when either
// file changes (Changed: its size, modification time or inode, so a file
// replaced by a rename or a symbolic link moved to another file counts).
//
// Handshakes take the certificate through GetCertificate, which reads an
// atomic pointer: a reload swaps it and touches no connection, established
// ones keep the keys they agreed on. A pair that fails to load (unreadable,
// not a certificate, a key that does not match) is refused and the
// certificate in use stays.
//
// Every handshake gets the certificate, whatever name its ClientHello asks
// for (SNI): a client that verifies the name then refuses it, one that
// does not (or asked for no name) is served.
//
// With client CAs (SetClientCAs) the CA file is reloaded with the pair, on
// its own: a CA file that fails to load keeps the CAs in use.
type CertFiles struct {
	certFile, keyFile string
	load              func() (tls.Certificate, error)

	cur atomic.Pointer[tls.Certificate]

	// Client CAs (tlsca.go): the file, how to load it, and the
	// configuration handshakes get through GetConfigForClient (a copy of
	// base with the CAs in use).
	caFile     string
	loadCA     func() (*x509.CertPool, error)
	base       *tls.Config
	perClient  atomic.Pointer[tls.Config]
	keys       [][32]byte     // the session-ticket keys in use (SetTicketKeys)
	initialCAs *x509.CertPool // loaded by SetClientCAs, until TLSConfig

	mu    sync.Mutex // serializes Reload, Changed, SetTicketKeys
	stamp [3]fileStamp
}

// fileStamp tells whether a file changed.
type fileStamp struct {
	size  int64
	mtime time.Time
	ino   uint64
	err   bool
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{err: true}
	}
	st := fileStamp{size: fi.Size(), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
	}
	return st
}

// NewCertFiles loads the certificate with load, which reads certFile and
// keyFile (and checks them as it sees fit), and returns it ready to serve.
func NewCertFiles(certFile, keyFile string, load func() (tls.Certificate, error)) (*CertFiles, error) {
	c := &CertFiles{certFile: certFile, keyFile: keyFile, load: load}
	c.stamp = c.stamps()
	cert, err := load()
	if err != nil {
		return nil, err
	}
	c.cur.Store(&cert)
	return c, nil
}

func (c *CertFiles) stamps() [3]fileStamp {
	st := [3]fileStamp{stampOf(c.certFile), stampOf(c.keyFile)}
	if c.caFile != "" {
		st[2] = stampOf(c.caFile)
	}
	return st
}

// GetCertificate is tls.Config.GetCertificate: the certificate in use, for
// any server name.
func (c *CertFiles) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert := c.cur.Load()
	if cert == nil {
		return nil, errors.New("engine: no certificate")
	}
	return cert, nil
}

// Current returns the certificate in use.
func (c *CertFiles) Current() *tls.Certificate { return c.cur.Load() }

// Reload loads the files again and, if they load, serves their certificate
// to the handshakes from now on; else it keeps the certificate in use and
// returns the error. It logs either outcome on log (nil: no log) with why
// (what asked for the reload).
func (c *CertFiles) Reload(log *slog.Logger, why string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stamp = c.stamps()
	return errors.Join(c.reloadPairLocked(log, why), c.reloadCAsLocked(log, why))
}

// reloadPairLocked is Reload for the certificate and its key.
func (c *CertFiles) reloadPairLocked(log *slog.Logger, why string) error {
	cert, err := c.load()
	if err != nil {
		if log != nil {
			log.Error("TLS certificate not reloaded: the certificate in use stays", "reason", why,
				"cert", c.certFile, "key", c.keyFile, "err", err)
		}
		return err
	}
	c.cur.Store(&cert)
	if log != nil {
		attrs := []any{"reason", why, "cert", c.certFile}
		if cert.Leaf != nil {
			attrs = append(attrs, "serial", cert.Leaf.SerialNumber.String(),
				"not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		log.Info("TLS certificate reloaded", attrs...)
	}
	return nil
}

// Changed tells whether any of the files changed since the last load.
func (c *CertFiles) Changed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stamps() != c.stamp
}

// Watch reloads the files whenever they change, looking every interval,
// until done is closed.
func (c *CertFiles) Watch(done <-chan struct{}, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if c.Changed() {
				_ = c.Reload(log, "files changed")
			}
		case <-done:
			return
		}
	}
}

// TLSConfig returns TLSConfig's configuration serving the certificate of c
// (reloads included), asking clients for a certificate when SetClientCAs
// was called. Call it once.
func (c *CertFiles) TLSConfig(minVersion uint16) *tls.Config {
	cfg := TLSConfig(tls.Certificate{}, minVersion)
	cfg.Certificates = nil
	cfg.GetCertificate = c.GetCertificate
	c.mu.Lock()
	defer c.mu.Unlock()
	c.base = cfg
	if c.loadCA != nil {
		c.usePoolLocked(c.initialCAs)
		// Handshakes take the configuration of GetConfigForClient; this
		// one keeps the first CAs, should anything read it.
		cfg.ClientCAs, cfg.ClientAuth = c.initialCAs, tls.RequireAndVerifyClientCert
		c.initialCAs = nil
		cfg.GetConfigForClient = c.configForClient
	}
	return cfg
}
