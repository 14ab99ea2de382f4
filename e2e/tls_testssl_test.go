package e2e

// testssl.sh (Debian's testssl.sh, installed by scripts/ensure-tls-tools.sh)
// against a node serving TLS: no finding of severity MEDIUM or worse.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	testsslPath = "/usr/bin/testssl"
	// testsslTimeout bounds one testssl.sh run (about 30 s here).
	testsslTimeout = 150 * time.Second
)

// testsslChecks are the checks run: every default check of testssl.sh
// 3.0 but two, and ciphers per protocol.
//
//	-p protocols, -s cipher categories, -f forward secrecy, -P server
//	preferences, -S server defaults and certificate, -h HTTP headers,
//	-U every vulnerability, -E each cipher per protocol.
//
// Left out: -c (client simulation, about 20 s: which of 40 historical
// clients would connect; its findings are INFO, not a weakness of the
// server) and -e (each cipher regardless of protocol: -E tries the same
// ciphers protocol by protocol). --nodns none: the node is on loopback,
// so DNS (CAA records) does not apply and there is no network to ask.
// The connect and openssl timeouts (20 s) only bound a hang: on a loaded
// machine (the whole suite with -race on 2 CPUs) a handshake may be slow,
// and a probe cut short would be misreported.
var testsslChecks = []string{"-p", "-s", "-f", "-P", "-S", "-h", "-U", "-E"}

// testsslKnown are findings of severity MEDIUM or worse that are known and
// accepted, by id, each with why. Anything else fails the test.
var testsslKnown = map[string]string{}

// testsslFinding is one entry of testssl.sh's --jsonfile output.
type testsslFinding struct {
	ID       string `json:"id"`
	Severity string `json:"severity"`
	Finding  string `json:"finding"`
	CVE      string `json:"cve"`
}

func (f testsslFinding) String() string {
	return fmt.Sprintf("%s %s %q", f.ID, f.Severity, f.Finding)
}

// TestTLSTestssl runs testssl.sh against two nodes with a certificate from
// a test CA it trusts (--add-ca): one process with an ECDSA key, and two
// worker processes with an RSA key.
func TestTLSTestssl(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(testsslPath); err != nil {
		t.Fatalf("testssl.sh is not installed (run `bash scripts/ensure-tls-tools.sh`, which `make test` does): %v", err)
	}
	for _, tc := range []struct {
		name    string
		rsa     bool
		workers string
	}{{"ecdsa", false, "0"}, {"rsa-workers=2", true, "2"}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			pki := newTLSPKI(t, root, tc.rsa)
			s := startServerWith(t, root, nil, nil, pki.Client, append(pki.Flags(), "--workers", tc.workers)...)
			findings := runTestssl(t, s, pki)
			checkTestssl(t, findings)
		})
	}
}

// runTestssl runs testssl.sh against s and returns its findings.
func runTestssl(t *testing.T, s *serverProc, pki *tlsPKI) []testsslFinding {
	t.Helper()
	dir := t.TempDir()
	jsonFile := filepath.Join(dir, "testssl.json")
	args := append([]string{"--quiet", "--color", "0", "--warnings", "batch",
		"--add-ca", pki.CAFile, "--ip", "127.0.0.1", "--nodns", "none",
		"--connect-timeout", "20", "--openssl-timeout", "20",
		"--jsonfile", jsonFile}, testsslChecks...)
	args = append(args, "localhost:"+s.port(t))
	ctx, cancel := context.WithTimeout(context.Background(), testsslTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, testsslPath, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// testssl.sh starts openssl processes: end them with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	t.Logf("testssl.sh %s: %v", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	if err != nil {
		// testssl.sh exits non-zero when a check could not run (or it
		// could not start).
		t.Fatalf("testssl.sh: %v (context: %v)\n%s", err, ctx.Err(), tail(out.String(), 8<<10))
	}
	b, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatalf("testssl.sh wrote no JSON: %v\n%s", err, tail(out.String(), 8<<10))
	}
	var findings []testsslFinding
	if err := json.Unmarshal(b, &findings); err != nil {
		t.Fatalf("testssl.sh JSON: %v\n%s", err, tail(string(b), 4<<10))
	}
	if t.Failed() {
		t.Logf("testssl.sh output:\n%s", out.String())
	}
	return findings
}

// testsslExpect are ids every run must report with severity OK or INFO,
// with the start of the finding when not "" (so that a run that checked
// nothing, or checked something else, fails; and a vulnerability check
// that reports LOW, such as LUCKY13's "potentially vulnerable", fails too).
var testsslExpect = map[string]string{
	"SSLv2": "not offered", "SSLv3": "not offered", "TLS1": "not offered", "TLS1_1": "not offered",
	"TLS1_2": "offered", "TLS1_3": "offered", "ALPN": "http/1.1",
	"cipherlist_NULL": "not offered", "cipherlist_aNULL": "not offered", "cipherlist_EXPORT": "not offered",
	"cipherlist_LOW": "not offered", "cipherlist_3DES_IDEA": "not offered", "cipherlist_AVERAGE": "not offered",
	"cert_chain_of_trust": "passed", "cert_trust": "Ok via SAN",
	"heartbleed": "", "CCS": "", "ticketbleed": "", "ROBOT": "", "secure_renego": "", "secure_client_renego": "",
	"CRIME_TLS": "", "BREACH": "", "POODLE_SSL": "", "fallback_SCSV": "", "SWEET32": "", "FREAK": "",
	"DROWN": "", "LOGJAM": "", "BEAST": "", "LUCKY13": "", "RC4": "",
}

// checkTestssl fails on findings of severity MEDIUM, HIGH or CRITICAL that
// are not known, on FATAL findings and scan problems, and on a run that
// did not report what testsslExpect names or offered a cipher without
// AEAD and forward secrecy.
func checkTestssl(t *testing.T, findings []testsslFinding) {
	t.Helper()
	byID := map[string]testsslFinding{}
	var bad, known, low []string
	ciphers := 0
	for _, f := range findings {
		byID[f.ID] = f
		switch {
		case f.Severity == "FATAL" || f.ID == "scanProblem":
			bad = append(bad, f.String())
		case f.Severity == "MEDIUM" || f.Severity == "HIGH" || f.Severity == "CRITICAL":
			if why, ok := testsslKnown[f.ID]; ok {
				known = append(known, f.String()+" (known: "+why+")")
			} else {
				bad = append(bad, f.String())
			}
		case f.Severity == "LOW" || f.Severity == "WARN":
			low = append(low, f.String())
		}
		if strings.HasPrefix(f.ID, "cipher-tls1_") {
			ciphers++
			if !strings.Contains(f.Finding, "ECDH") || !strings.Contains(f.Finding, "GCM") && !strings.Contains(f.Finding, "ChaCha20") {
				bad = append(bad, f.String()+" (not ECDHE with AES-GCM or ChaCha20-Poly1305)")
			}
		}
	}
	if ciphers == 0 {
		bad = append(bad, "no cipher-tls1_* finding: -E tested no cipher")
	}
	for id, want := range testsslExpect {
		f, ok := byID[id]
		switch {
		case !ok:
			bad = append(bad, id+": not reported")
		case f.Severity != "OK" && f.Severity != "INFO" || !strings.HasPrefix(f.Finding, want):
			bad = append(bad, fmt.Sprintf("%s (want severity OK or INFO and a finding starting %q)", f, want))
		}
	}
	for id := range testsslKnown {
		if f, ok := byID[id]; !ok || f.Severity != "MEDIUM" && f.Severity != "HIGH" && f.Severity != "CRITICAL" {
			t.Logf("testssl.sh no longer reports the known finding %s (got %v): take it out of testsslKnown", id, f)
		}
	}
	sort.Strings(bad)
	for _, s := range low {
		t.Logf("testssl.sh, below MEDIUM: %s", s)
	}
	for _, s := range known {
		t.Logf("testssl.sh, known: %s", s)
	}
	if len(bad) > 0 {
		t.Errorf("testssl.sh: %d findings of severity MEDIUM or worse (or a run that did not check what it must):\n%s",
			len(bad), strings.Join(bad, "\n"))
	}
}

// tail is the last n bytes of s.
func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
