package auth

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestMalformedTimeClaims: a time claim that is not a NumericDate in range
// is a malformed token, not an expired one.
func TestMalformedTimeClaims(t *testing.T) {
	v, err := NewVerifier(Config{Secret: secret, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	future := now.Add(time.Hour).Unix()
	for _, tc := range []struct {
		name   string
		claims jwt.MapClaims
		want   string // in the error; "" for a valid token
	}{
		{"exp number", jwt.MapClaims{"sub": "a", "exp": future}, ""},
		{"exp as a string", jwt.MapClaims{"sub": "a", "exp": "9999999999"}, "malformed: exp is not a JSON number"},
		{"exp 1e20", jwt.MapClaims{"sub": "a", "exp": 1e20}, "malformed: exp out of range"},
		{"exp negative", jwt.MapClaims{"sub": "a", "exp": -5}, "malformed: exp out of range"},
		{"exp object", jwt.MapClaims{"sub": "a", "exp": map[string]int{"x": 1}}, "malformed: exp is not a JSON number"},
		{"nbf as a string", jwt.MapClaims{"sub": "a", "exp": future, "nbf": "1"}, "malformed: nbf is not a JSON number"},
		{"iat 1e300", jwt.MapClaims{"sub": "a", "exp": future, "iat": 1e300}, "malformed: iat out of range"},
		{"exp missing", jwt.MapClaims{"sub": "a"}, "exp claim required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, tc.claims))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("valid token refused: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrTokenInvalid) || errors.Is(err, ErrTokenExpired) {
				t.Fatalf("err = %v, want ErrTokenInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "expired") {
				t.Fatalf("err = %q, want it to say %q", err, tc.want)
			}
		})
	}
}

// TestMissingIssuer: with an issuer configured, a token without iss is
// refused for its iss, whatever the algorithm.
func TestMissingIssuer(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(Config{PublicKey: pemOf(t, &rsaKey.PublicKey), Issuer: "https://issuer.example", Audience: "zc",
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	exp := now.Add(time.Hour).Unix()
	for _, tc := range []struct {
		name   string
		claims jwt.MapClaims
		want   string
	}{
		{"no iss", jwt.MapClaims{"sub": "a", "exp": exp, "aud": "zc"}, "iss claim required"},
		{"no aud", jwt.MapClaims{"sub": "a", "exp": exp, "iss": "https://issuer.example"}, "aud claim required"},
		{"no exp", jwt.MapClaims{"sub": "a", "iss": "https://issuer.example", "aud": "zc"}, "exp claim required"},
		{"wrong iss", jwt.MapClaims{"sub": "a", "exp": exp, "iss": "https://other", "aud": "zc"}, "wrong issuer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(sign(t, jwt.SigningMethodRS256, rsaKey, tc.claims))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	ok := jwt.MapClaims{"sub": "a", "exp": exp, "iss": "https://issuer.example", "aud": "zc"}
	if _, err := v.Verify(sign(t, jwt.SigningMethodRS256, rsaKey, ok)); err != nil {
		t.Fatalf("valid RS256 token refused: %v", err)
	}
}
