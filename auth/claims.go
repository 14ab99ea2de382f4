package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/golang-jwt/jwt/v5"
)

// maxNumericDate is the latest time a token's exp, nbf or iat may name:
// 9999-12-31T23:59:59Z, in seconds since the epoch. Later values are refused
// as out of range rather than wrapped around into an expiry in the past.
const maxNumericDate = 253402300799

// Errors of a malformed time claim; Verify reports them as ErrTokenInvalid.
var (
	errDateNotNumber = errors.New("is not a JSON number")
	errDateRange     = errors.New("out of range")
)

// dateError names the time claim that did not decode.
type dateError struct {
	claim string
	err   error
}

func (e *dateError) Error() string { return e.claim + " " + e.err.Error() }
func (e *dateError) Unwrap() error { return e.err }

// UnmarshalJSON decodes a claim set, refusing exp, nbf and iat given as
// anything but a JSON number from 0 to year 9999 (RFC 7519 section 2
// defines NumericDate as a number; a string or an absurd number is a
// malformed token, not an expired one).
func (c *Claims) UnmarshalJSON(b []byte) error {
	var times struct {
		Exp json.RawMessage `json:"exp"`
		Nbf json.RawMessage `json:"nbf"`
		Iat json.RawMessage `json:"iat"`
	}
	if err := json.Unmarshal(b, &times); err != nil {
		return err
	}
	for _, d := range []struct {
		name string
		raw  json.RawMessage
	}{{"exp", times.Exp}, {"nbf", times.Nbf}, {"iat", times.Iat}} {
		if err := checkNumericDate(d.raw); err != nil {
			return &dateError{claim: d.name, err: err}
		}
	}
	type plain Claims // without this method
	return json.Unmarshal(b, (*plain)(c))
}

// checkNumericDate checks one raw time claim; absent and null are left
// to the claim checks (exp is required).
func checkNumericDate(raw json.RawMessage) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
		return errDateNotNumber
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		return errDateNotNumber
	}
	if f < 0 || f > maxNumericDate {
		return errDateRange
	}
	return nil
}

// claimError turns a parse error that concerns a claim's form or presence
// into a message naming that claim; ok is false for other errors.
func (v *Verifier) claimError(err error, claims *Claims) (error, bool) {
	var de *dateError
	if errors.As(err, &de) {
		return fmt.Errorf("%w: malformed: %s", ErrTokenInvalid, de.Error()), true
	}
	if !errorsIsMissing(err) {
		return nil, false
	}
	switch {
	case claims.ExpiresAt == nil:
		return fmt.Errorf("%w: exp claim required", ErrTokenInvalid), true
	case v.issuer != "" && claims.Issuer == "":
		return fmt.Errorf("%w: iss claim required", ErrTokenInvalid), true
	case v.audience != "" && len(claims.Audience) == 0:
		return fmt.Errorf("%w: aud claim required", ErrTokenInvalid), true
	}
	return fmt.Errorf("%w: a required claim is missing", ErrTokenInvalid), true
}

func errorsIsMissing(err error) bool {
	return err != nil && errors.Is(err, jwt.ErrTokenRequiredClaimMissing)
}
