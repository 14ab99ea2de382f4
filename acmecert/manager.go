package acmecert

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/acme"
)

// Challenge types Manager answers.
const (
	TLSALPN01  = "tls-alpn-01"
	HTTP01Type = "http-01"
)

// LetsEncrypt is Let's Encrypt's production directory.
const LetsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

// Timing of Manager.
const (
	// maxSleep is the longest Manager waits between two looks at its
	// certificate.
	maxSleep = 12 * time.Hour
	// firstRetry and maxRetry bound the wait after a failed order,
	// doubled at each failure in a row.
	firstRetry = 10 * time.Second
	maxRetry   = time.Hour
	// orderTimeout bounds one order, challenges included.
	orderTimeout = 5 * time.Minute
)

// Config is what Manager needs.
type Config struct {
	Dir        string   // the folder of the files (see the package's doc)
	Domains    []string // the certificate's names, lower case, checked
	Email      string   // the account's contact, or ""
	Directory  string   // the CA's directory URL
	Roots      *x509.CertPool
	Challenges []string // challenge types in the order they are tried
	Log        *slog.Logger
	// Registerer, when set, receives zenconn_acme_orders_total and
	// zenconn_acme_certificate_not_after_seconds.
	Registerer prometheus.Registerer
}

// Manager keeps a valid certificate for Config.Domains in Config.Dir:
// it orders one when there is none (or it does not cover the domains) and
// renews it when a third of its lifetime is left.
type Manager struct {
	cfg    Config
	client *acme.Client
	next   int // index in cfg.Challenges of the type the next order uses

	orders   *prometheus.CounterVec // by result: obtained, failed
	notAfter prometheus.Gauge       // of the certificate in the cache
}

// New returns a Manager; it talks to nobody yet.
func New(cfg Config) *Manager {
	hc := &http.Client{Timeout: time.Minute}
	if cfg.Roots != nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: cfg.Roots, MinVersion: tls.VersionTLS12}
		hc.Transport = tr
	}
	m := &Manager{cfg: cfg, client: &acme.Client{DirectoryURL: cfg.Directory, HTTPClient: hc, UserAgent: "zenconn"}}
	m.orders = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "zenconn_acme_orders_total",
		Help: "Certificate orders to the ACME CA by result (obtained, failed: each failure is retried later).",
	}, []string{"result"})
	m.orders.WithLabelValues("obtained")
	m.orders.WithLabelValues("failed")
	m.notAfter = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "zenconn_acme_certificate_not_after_seconds",
		Help: "Expiry (Unix time) of the certificate from the ACME CA in use; 0 before there is one.",
	})
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(m.orders, m.notAfter)
	}
	return m
}

// Run keeps the certificate until ctx ends. It never fails: a CA that
// refuses or does not answer is logged and tried again later, waiting
// firstRetry and twice as long after each further failure, up to maxRetry.
func (m *Manager) Run(ctx context.Context) {
	retry := firstRetry
	for {
		wait, err := m.check(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			m.orders.WithLabelValues("failed").Inc()
			m.cfg.Log.Error("ACME: no certificate obtained; trying again later", "err", err, "retry_in", retry.String())
			wait = retry
			retry = min(2*retry, maxRetry)
		} else {
			retry = firstRetry
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// check orders a certificate if the cached one is missing, does not cover
// the domains or is due for renewal; it returns how long to wait before
// looking again.
func (m *Manager) check(ctx context.Context) (time.Duration, error) {
	now := time.Now()
	cert, err := LoadCertificate(CertPath(m.cfg.Dir))
	switch {
	case errors.Is(err, os.ErrNotExist):
		m.cfg.Log.Info("ACME: no certificate yet; ordering one", "domains", m.cfg.Domains)
	case err != nil:
		m.cfg.Log.Warn("ACME: the cached certificate is unusable; ordering one", "err", err)
	case !m.covers(cert.Leaf):
		m.cfg.Log.Info("ACME: the cached certificate does not cover every domain; ordering one", "domains", m.cfg.Domains)
	case now.Before(RenewAt(cert.Leaf)):
		m.notAfter.Set(float64(cert.Leaf.NotAfter.Unix()))
		wait := min(RenewAt(cert.Leaf).Sub(now), maxSleep)
		m.cfg.Log.Info("ACME: the certificate is good; next look later", "serial", cert.Leaf.SerialNumber.String(),
			"renew_at", RenewAt(cert.Leaf).UTC().Format(time.RFC3339), "next_look_in", wait.Round(time.Second).String())
		return wait, nil
	default:
		m.cfg.Log.Info("ACME: renewing the certificate", "serial", cert.Leaf.SerialNumber.String(),
			"not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	leaf, err := m.obtain(ctx)
	if err != nil {
		return 0, err
	}
	m.orders.WithLabelValues("obtained").Inc()
	m.notAfter.Set(float64(leaf.NotAfter.Unix()))
	return min(max(time.Until(RenewAt(leaf)), time.Second), maxSleep), nil
}

// Cached logs the certificate in the cache at start, if there is one.
func (m *Manager) Cached() {
	cert, err := LoadCertificate(CertPath(m.cfg.Dir))
	if err == nil && m.covers(cert.Leaf) {
		m.cfg.Log.Info("ACME: certificate from the cache", "serial", cert.Leaf.SerialNumber.String(),
			"not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339), "renew_at", RenewAt(cert.Leaf).UTC().Format(time.RFC3339))
	}
}

// RenewAt is when a certificate is renewed: with a third of its lifetime
// left.
func RenewAt(leaf *x509.Certificate) time.Time {
	return leaf.NotAfter.Add(-leaf.NotAfter.Sub(leaf.NotBefore) / 3)
}

func (m *Manager) covers(leaf *x509.Certificate) bool {
	for _, d := range m.cfg.Domains {
		if leaf.VerifyHostname(d) != nil {
			return false
		}
	}
	return true
}

// obtain orders a certificate, trying each challenge type in turn (an
// authorization whose challenge failed is invalid: the next type needs a
// new order), and writes it.
func (m *Manager) obtain(ctx context.Context) (*x509.Certificate, error) {
	if err := m.account(ctx); err != nil {
		return nil, err
	}
	if len(m.cfg.Challenges) == 0 {
		return nil, errors.New("no challenge type to answer")
	}
	var errs []error
	for range m.cfg.Challenges {
		typ := m.cfg.Challenges[m.next]
		leaf, err := m.order(ctx, typ)
		if err == nil {
			return leaf, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", typ, err))
		m.next = (m.next + 1) % len(m.cfg.Challenges)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// account loads or makes the account key and registers it (again: the CA
// answers with the existing account).
func (m *Manager) account(ctx context.Context) error {
	if m.client.Key == nil {
		key, err := m.accountKey()
		if err != nil {
			return err
		}
		m.client.Key = key
	}
	acct := &acme.Account{}
	if m.cfg.Email != "" {
		acct.Contact = []string{"mailto:" + m.cfg.Email}
	}
	ctx, cancel := context.WithTimeout(ctx, orderTimeout)
	defer cancel()
	_, err := m.client.Register(ctx, acct, acme.AcceptTOS)
	if err != nil && !errors.Is(err, acme.ErrAccountAlreadyExists) {
		return fmt.Errorf("registering the account at %s: %w", m.cfg.Directory, err)
	}
	return nil
}

func (m *Manager) accountKey() (crypto.Signer, error) {
	path := filepath.Join(m.cfg.Dir, accountFile)
	if b, err := readSmall(path); err == nil {
		block, _ := pem.Decode(b)
		if block == nil {
			return nil, fmt.Errorf("%s: no PEM key", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, fmt.Errorf("%s: not a signing key", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	b, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return key, writeFile(path, b)
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
