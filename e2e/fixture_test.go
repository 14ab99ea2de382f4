package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The static-file fixture written into every server's --public dir.
//
//	root/
//	  secret                 outside the public dir: must never be served
//	  public/
//	    index.html           fixtureIndex
//	    big.txt              64 KiB of compressible text (fixtureBig)
//	    sub/index.html       fixtureSubIndex
//	    logo.png             incompressible bytes behind a PNG signature
//	    .env, .git/config    dotfiles: must never be served
const (
	fixtureIndex    = "<!doctype html>\n<html><head><title>ZenConn e2e</title></head>\n<body><p>root index of the e2e fixture</p></body></html>\n"
	fixtureSubIndex = "<!doctype html>\n<html><body><p>sub folder index</p></body></html>\n"
	fixtureSecret   = "TOP-SECRET-e2e-6f1b2c: outside the public dir\n"
	fixtureEnv      = "ZENCONN_E2E_DOTENV=must-not-leak\n"
	fixtureGit      = "[core]\n\tzenconn-e2e = must-not-leak\n"
	bigSize         = 64 << 10
)

var (
	fixtureBig = makeBig()
	fixturePNG = makePNG()
)

func makeBig() []byte {
	var b strings.Builder
	for i := 0; b.Len() < bigSize; i++ {
		fmt.Fprintf(&b, "line %05d: the quick brown fox jumps over the lazy dog, ZenConn e2e fixture\n", i)
	}
	return []byte(b.String()[:bigSize])
}

func makePNG() []byte {
	r := rand.New(rand.NewPCG(1, 2))
	p := make([]byte, 8<<10)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	copy(p, "\x89PNG\r\n\x1a\n")
	return p
}

func writeFixture(t *testing.T, root string) {
	t.Helper()
	files := map[string]string{
		"secret":                fixtureSecret,
		"public/index.html":     fixtureIndex,
		"public/big.txt":        string(fixtureBig),
		"public/sub/index.html": fixtureSubIndex,
		"public/logo.png":       string(fixturePNG),
		"public/.env":           fixtureEnv,
		"public/.git/config":    fixtureGit,
	}
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
