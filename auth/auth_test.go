package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/zenconn/server/internal/leaktest"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

var (
	secret = []byte("0123456789abcdef0123456789abcdef")
	now    = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
)

func claims(sub string, exp time.Duration) Claims {
	return Claims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: sub, ExpiresAt: jwt.NewNumericDate(now.Add(exp))},
		Grants:           Grants{Subscribe: []string{"private-team-*"}, Publish: []string{"private-team-a"}, Broadcast: true},
	}
}

func sign(t *testing.T, m jwt.SigningMethod, key any, c jwt.Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func pemOf(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestVerifyHMAC(t *testing.T) {
	v, err := NewVerifier(Config{Secret: secret, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	otherSecret := []byte("ffffffffffffffffffffffffffffffff")
	valid := sign(t, jwt.SigningMethodHS256, secret, claims("alice", time.Hour))
	parts := strings.Split(valid, ".")
	tamperedClaims := claims("mallory", time.Hour)
	tamperedClaims.Grants.Subscribe = []string{"*"}
	tp := strings.Split(sign(t, jwt.SigningMethodHS256, otherSecret, tamperedClaims), ".")
	noneTok := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims("alice", time.Hour))
	nbf := claims("alice", time.Hour)
	nbf.NotBefore = jwt.NewNumericDate(now.Add(time.Minute))
	noExp := claims("alice", 0)
	noExp.ExpiresAt = nil
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)

	for _, tc := range []struct {
		name    string
		token   string
		wantErr error
	}{
		{"valid HS256", valid, nil},
		{"valid HS384", sign(t, jwt.SigningMethodHS384, secret, claims("alice", time.Hour)), nil},
		{"valid HS512", sign(t, jwt.SigningMethodHS512, secret, claims("alice", time.Hour)), nil},
		{"expired", sign(t, jwt.SigningMethodHS256, secret, claims("alice", -time.Second)), ErrTokenExpired},
		{"not yet valid", sign(t, jwt.SigningMethodHS256, secret, nbf), ErrTokenNotYetValid},
		{"no exp", sign(t, jwt.SigningMethodHS256, secret, noExp), ErrTokenInvalid},
		{"wrong key", sign(t, jwt.SigningMethodHS256, otherSecret, claims("alice", time.Hour)), ErrTokenInvalid},
		{"tampered claims", parts[0] + "." + tp[1] + "." + parts[2], ErrTokenInvalid},
		{"tampered signature", parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString([]byte("nope")), ErrTokenInvalid},
		{"alg none", noneTok, ErrTokenInvalid},
		{"alg none unsigned", strings.TrimSuffix(noneTok, ".") + ".", ErrTokenInvalid},
		{"wrong algorithm RS256", sign(t, jwt.SigningMethodRS256, rsaKey, claims("alice", time.Hour)), ErrTokenInvalid},
		{"garbage", "not.a.token", ErrTokenInvalid},
		{"empty", "", ErrTokenInvalid},
		{"huge", strings.Repeat("a", MaxTokenLen+1), ErrTokenInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(tc.token)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if id.User != "alice" || !id.Grants.Broadcast || !id.Grants.CanSubscribe("private-team-x") || !id.Expires.Equal(now.Add(time.Hour)) {
					t.Fatalf("identity = %+v", id)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestVerifyPublicKeys(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	for _, tc := range []struct {
		name   string
		pub    any
		method jwt.SigningMethod
		priv   any
	}{
		{"RS256", &rsaKey.PublicKey, jwt.SigningMethodRS256, rsaKey},
		{"ES256", &ecKey.PublicKey, jwt.SigningMethodES256, ecKey},
		{"EdDSA", edPub, jwt.SigningMethodEdDSA, edPriv},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewVerifier(Config{PublicKey: pemOf(t, tc.pub), Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.Verify(sign(t, tc.method, tc.priv, claims("alice", time.Hour))); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			// An HMAC token signed with the public key's bytes (the classic
			// algorithm-confusion attack) must be refused.
			if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, pemOf(t, tc.pub), claims("alice", time.Hour))); !errors.Is(err, ErrTokenInvalid) {
				t.Fatalf("HS256 with the public key as secret: err = %v", err)
			}
		})
	}
}

func TestIssuerAudience(t *testing.T) {
	v, err := NewVerifier(Config{Secret: secret, Issuer: "https://issuer", Audience: "zenconn", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	c := claims("alice", time.Hour)
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, c)); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("token without iss/aud: err = %v", err)
	}
	c.Issuer, c.Audience = "https://issuer", jwt.ClaimStrings{"zenconn"}
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, c)); err != nil {
		t.Fatalf("matching iss/aud: %v", err)
	}
	c.Audience = jwt.ClaimStrings{"other"}
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, c)); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("wrong aud: err = %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := NewVerifier(Config{}); err == nil {
		t.Error("no key accepted")
	}
	if _, err := NewVerifier(Config{Secret: []byte("short")}); err == nil || !strings.Contains(err.Error(), "32") {
		t.Errorf("short secret: err = %v", err)
	}
	if _, err := NewVerifier(Config{PublicKey: []byte("not pem")}); err == nil {
		t.Error("garbage public key accepted")
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	if _, err := NewVerifier(Config{PublicKey: pemOf(t, &small.PublicKey)}); err == nil {
		t.Error("1024-bit RSA key accepted")
	}
}

func TestPatterns(t *testing.T) {
	for _, tc := range []struct {
		pattern, channel string
		want             bool
	}{
		{"news", "news", true},
		{"news", "news2", false},
		{"news*", "news2", true},
		{"news*", "news", true},
		{"private-team-*", "private-team-a", true},
		{"private-team-*", "private-other", false},
		{"*", "anything", true},
		{"private-*", "public", false},
	} {
		if got := Match(tc.pattern, tc.channel); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.pattern, tc.channel, got, tc.want)
		}
	}
	for _, tc := range []struct {
		p    string
		want bool
	}{
		{"news", true}, {"news*", true}, {"*", true}, {"", false}, {"a*b", false}, {"**", false},
		{"a b", false}, {strings.Repeat("a", 128), true}, {strings.Repeat("a", 129), false}, {"private-team-*", true},
	} {
		if got := ValidPattern(tc.p); got != tc.want {
			t.Errorf("ValidPattern(%q) = %v, want %v", tc.p, got, tc.want)
		}
	}
}

func TestSignHMAC(t *testing.T) {
	tok, err := SignHMAC(secret, "HS256", claims("bob", time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	v, _ := NewVerifier(Config{Secret: secret, Now: func() time.Time { return now }})
	id, err := v.Verify(tok)
	if err != nil || id.User != "bob" {
		t.Fatalf("round trip: id=%+v err=%v", id, err)
	}
	if _, err := SignHMAC(secret, "RS256", claims("bob", time.Hour)); err == nil {
		t.Error("RS256 accepted by SignHMAC")
	}
	bad := claims("bob", time.Hour)
	bad.Grants.Publish = []string{"a b"}
	if _, err := SignHMAC(secret, "HS256", bad); err == nil {
		t.Error("invalid pattern signed")
	}
}

func FuzzVerify(f *testing.F) {
	v, err := NewVerifier(Config{Secret: secret, Now: func() time.Time { return now }})
	if err != nil {
		f.Fatal(err)
	}
	good, _ := SignHMAC(secret, "HS256", claims("alice", time.Hour))
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.")
	f.Add("a.b.c")
	f.Add("")
	f.Add(strings.Repeat(".", 100))
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := v.Verify(tok)
		if err == nil {
			// Anything accepted must carry a valid identity with valid patterns.
			if id == nil || id.Expires.IsZero() {
				t.Fatalf("accepted token without expiry: %q", tok)
			}
			for _, p := range append(append([]string(nil), id.Grants.Subscribe...), id.Grants.Publish...) {
				if !ValidPattern(p) {
					t.Fatalf("accepted invalid pattern %q", p)
				}
			}
		}
	})
}
