package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/zenconn/server/auth"
)

// listFlag collects a repeatable flag; each value may also hold several
// comma-separated items.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// token prints a signed client token: zenconn token --secret S --sub alice
// --subscribe 'private-team-*' --publish 'private-team-*' --broadcast --ttl 1h
func token(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	secret := fs.String("secret", "", "HMAC secret, at least 32 bytes (env ZENCONN_JWT_SECRET when not given)")
	alg := fs.String("alg", "HS256", "HS256, HS384 or HS512")
	sub := fs.String("sub", "", "user id (sub claim)")
	var subscribe, publish listFlag
	fs.Var(&subscribe, "subscribe", "channel pattern the token may subscribe to (repeatable, or comma-separated)")
	fs.Var(&publish, "publish", "channel pattern the token may publish to (repeatable, or comma-separated)")
	broadcast := fs.Bool("broadcast", false, "grant broadcast")
	ttl := fs.Duration("ttl", time.Hour, "lifetime of the token")
	issuer := fs.String("issuer", "", "iss claim")
	audience := fs.String("audience", "", "aud claim")
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if *secret == "" {
		*secret = os.Getenv("ZENCONN_JWT_SECRET")
	}
	if *secret == "" || *sub == "" || *ttl <= 0 {
		return usageError(stderr, "token", errors.New("--secret (or ZENCONN_JWT_SECRET), --sub and a positive --ttl are required"))
	}
	now := time.Now()
	c := auth.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   *sub,
			Issuer:    *issuer,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(*ttl)),
		},
		Grants: auth.Grants{Subscribe: subscribe, Publish: publish, Broadcast: *broadcast},
	}
	if *audience != "" {
		c.Audience = jwt.ClaimStrings{*audience}
	}
	tok, err := auth.SignHMAC([]byte(*secret), *alg, c)
	if err != nil {
		return usageError(stderr, "token", err)
	}
	fmt.Fprintln(stdout, tok)
	return 0
}
