// Package auth verifies the signed tokens (JWT) that carry a client's
// identity and grants, and matches grants against channel names.
//
// A token's claims are the registered ones (sub is the user id, exp is
// required, nbf is honoured, iss and aud are checked when configured) plus
// grants:
//
//	{"subscribe":["pattern",...],"publish":["pattern",...],"broadcast":true|false}
//
// A pattern is a channel name, matched exactly, or a channel-name prefix
// followed by one trailing "*", matching every channel that starts with the
// prefix ("*" alone matches every channel). No other wildcard exists.
//
// A Verifier is safe for concurrent use.
package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MinSecretLen is the shortest HMAC secret accepted, in bytes.
const MinSecretLen = 32

// MaxTokenLen bounds the size of a token accepted for verification.
const MaxTokenLen = 8 << 10

// Grants is what a token allows.
type Grants struct {
	Subscribe []string `json:"subscribe,omitempty"`
	Publish   []string `json:"publish,omitempty"`
	Broadcast bool     `json:"broadcast,omitempty"`
}

// Claims is a ZenConn token's claim set.
type Claims struct {
	jwt.RegisteredClaims
	Grants Grants `json:"grants"`
}

// Identity is a verified token: who, what they may do, and until when.
type Identity struct {
	User    string
	Grants  Grants
	Expires time.Time
}

// CanSubscribe reports whether the grants allow subscribing to channel.
func (g *Grants) CanSubscribe(channel string) bool { return matchAny(g.Subscribe, channel) }

// CanPublish reports whether the grants allow publishing to channel.
func (g *Grants) CanPublish(channel string) bool { return matchAny(g.Publish, channel) }

func matchAny(patterns []string, channel string) bool {
	for _, p := range patterns {
		if Match(p, channel) {
			return true
		}
	}
	return false
}

// Match reports whether channel matches pattern (see the package doc).
func Match(pattern, channel string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(channel, prefix)
	}
	return pattern == channel
}

// ValidPattern reports whether p is a well-formed grant pattern: 1 to 128
// bytes of channel-name characters with an optional single trailing "*".
func ValidPattern(p string) bool {
	body := strings.TrimSuffix(p, "*")
	if p == "*" {
		return true
	}
	if body == "" || len(p) > 128 || strings.Contains(body, "*") {
		return false
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_.:@-", c) >= 0) {
			return false
		}
	}
	return true
}

// Config configures a Verifier. At least one of Secret and PublicKey must be
// set.
type Config struct {
	// Secret is the HMAC key for HS256, HS384 and HS512; at least 32 bytes.
	Secret []byte
	// PublicKey is a PEM public key: RSA (RS256), ECDSA P-256 (ES256) or
	// Ed25519 (EdDSA).
	PublicKey []byte
	// Issuer and Audience, when set, must match the token's iss and aud.
	Issuer, Audience string
	// Leeway tolerates clock skew on exp and nbf. Default 0.
	Leeway time.Duration
	// Now replaces the clock in tests. Default time.Now.
	Now func() time.Time
}

// Verifier checks tokens.
type Verifier struct {
	secret  []byte
	pub     any
	pubAlg  string
	methods []string
	parser  *jwt.Parser
	// issuer and audience are the required iss and aud, "" when unchecked.
	issuer, audience string
}

// NewVerifier validates cfg and builds a Verifier.
func NewVerifier(cfg Config) (*Verifier, error) {
	v := &Verifier{issuer: cfg.Issuer, audience: cfg.Audience}
	if len(cfg.Secret) == 0 && len(cfg.PublicKey) == 0 {
		return nil, errors.New("auth: a secret or a public key is required")
	}
	if len(cfg.Secret) > 0 {
		if len(cfg.Secret) < MinSecretLen {
			return nil, fmt.Errorf("auth: the secret is %d bytes; at least %d are required", len(cfg.Secret), MinSecretLen)
		}
		v.secret = cfg.Secret
		v.methods = append(v.methods, "HS256", "HS384", "HS512")
	}
	if len(cfg.PublicKey) > 0 {
		pub, alg, err := parsePublicKey(cfg.PublicKey)
		if err != nil {
			return nil, err
		}
		v.pub, v.pubAlg = pub, alg
		v.methods = append(v.methods, alg)
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(v.methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.Leeway),
	}
	if cfg.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(cfg.Now))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// Methods returns the accepted signing algorithms.
func (v *Verifier) Methods() []string { return append([]string(nil), v.methods...) }

func parsePublicKey(pemBytes []byte) (any, string, error) {
	if k, err := jwt.ParseRSAPublicKeyFromPEM(pemBytes); err == nil {
		if k.N.BitLen() < 2048 {
			return nil, "", errors.New("auth: RSA public key under 2048 bits")
		}
		return k, "RS256", nil
	}
	if k, err := jwt.ParseECPublicKeyFromPEM(pemBytes); err == nil {
		if k.Curve != elliptic.P256() {
			return nil, "", errors.New("auth: only P-256 ECDSA keys (ES256) are accepted")
		}
		return k, "ES256", nil
	}
	if k, err := jwt.ParseEdPublicKeyFromPEM(pemBytes); err == nil {
		return k, "EdDSA", nil
	}
	return nil, "", errors.New("auth: the public key is not a PEM RSA, ECDSA P-256 or Ed25519 public key")
}

// Sentinel errors of Verify; the error's text is a reason fit for a client.
var (
	ErrTokenExpired     = errors.New("token expired")
	ErrTokenNotYetValid = errors.New("token not valid yet")
	ErrTokenInvalid     = errors.New("invalid token")
)

// Verify checks a token's signature, algorithm and claims and returns the
// identity it carries. Errors wrap ErrTokenExpired, ErrTokenNotYetValid or
// ErrTokenInvalid.
func (v *Verifier) Verify(token string) (*Identity, error) {
	if len(token) > MaxTokenLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrTokenInvalid, MaxTokenLen)
	}
	var claims Claims
	_, err := v.parser.ParseWithClaims(token, &claims, v.key)
	if cerr, ok := v.claimError(err, &claims); ok {
		return nil, cerr
	}
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, ErrTokenExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return nil, ErrTokenNotYetValid
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return nil, fmt.Errorf("%w: signature does not verify", ErrTokenInvalid)
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return nil, fmt.Errorf("%w: wrong issuer", ErrTokenInvalid)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return nil, fmt.Errorf("%w: wrong audience", ErrTokenInvalid)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return nil, fmt.Errorf("%w: signing algorithm not accepted", ErrTokenInvalid)
	case errors.Is(err, jwt.ErrTokenMalformed):
		return nil, fmt.Errorf("%w: malformed", ErrTokenInvalid)
	default:
		return nil, fmt.Errorf("%w: %s", ErrTokenInvalid, strings.TrimPrefix(err.Error(), "token is "))
	}
	for _, p := range claims.Grants.Subscribe {
		if !ValidPattern(p) {
			return nil, fmt.Errorf("%w: bad subscribe pattern", ErrTokenInvalid)
		}
	}
	for _, p := range claims.Grants.Publish {
		if !ValidPattern(p) {
			return nil, fmt.Errorf("%w: bad publish pattern", ErrTokenInvalid)
		}
	}
	id := &Identity{User: claims.Subject, Grants: claims.Grants}
	if claims.ExpiresAt != nil {
		id.Expires = claims.ExpiresAt.Time
	}
	return id, nil
}

// key picks the verification key for the token's algorithm; the parser has
// already refused algorithms outside the allow-list (never "none").
func (v *Verifier) key(t *jwt.Token) (any, error) {
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		if v.secret != nil {
			return v.secret, nil
		}
	case *jwt.SigningMethodRSA:
		if k, ok := v.pub.(*rsa.PublicKey); ok {
			return k, nil
		}
	case *jwt.SigningMethodECDSA:
		if k, ok := v.pub.(*ecdsa.PublicKey); ok {
			return k, nil
		}
	case *jwt.SigningMethodEd25519:
		if k, ok := v.pub.(ed25519.PublicKey); ok {
			return k, nil
		}
	}
	return nil, fmt.Errorf("no key for algorithm %s", t.Method.Alg())
}

// SignHMAC issues a token signed with secret (alg HS256, HS384 or HS512).
func SignHMAC(secret []byte, alg string, c Claims) (string, error) {
	if len(secret) < MinSecretLen {
		return "", fmt.Errorf("auth: the secret is %d bytes; at least %d are required", len(secret), MinSecretLen)
	}
	m := jwt.GetSigningMethod(alg)
	if _, ok := m.(*jwt.SigningMethodHMAC); !ok {
		return "", fmt.Errorf("auth: %q is not an HMAC algorithm", alg)
	}
	for _, p := range append(append([]string(nil), c.Grants.Subscribe...), c.Grants.Publish...) {
		if !ValidPattern(p) {
			return "", fmt.Errorf("auth: invalid pattern %q", p)
		}
	}
	return jwt.NewWithClaims(m, c).SignedString(secret)
}
