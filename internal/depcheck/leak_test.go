package depcheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestEveryPackageChecksLeaks fails when a package of the module has tests
// but no TestMain that verifies goroutine leaks (goleak, through
// internal/leaktest or directly).
func TestEveryPackageChecksLeaks(t *testing.T) {
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Dir,TestGoFiles,XTestGoFiles", "./...")
	cmd.Dir = moduleRoot(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	checked := 0
	for {
		var p struct {
			ImportPath, Dir           string
			TestGoFiles, XTestGoFiles []string
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		files := append(p.TestGoFiles, p.XTestGoFiles...)
		if len(files) == 0 {
			continue
		}
		checked++
		found := false
		for _, f := range files {
			b, err := os.ReadFile(filepath.Join(p.Dir, f))
			if err != nil {
				t.Fatal(err)
			}
			s := string(b)
			if strings.Contains(s, "func TestMain(") &&
				(strings.Contains(s, "leaktest.VerifyTestMain(") || strings.Contains(s, "goleak.VerifyTestMain(") ||
					strings.Contains(s, "goleak.Find(")) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("%s has tests but no TestMain verifying goroutine leaks", p.ImportPath)
		}
	}
	if checked < 10 {
		t.Fatalf("only %d packages with tests found", checked)
	}
}
