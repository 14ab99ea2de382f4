package depcheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/zenconn/server"

// forbidden lists, per unit, the units it must not depend on, directly
// or through another package (tests included). A unit is a folder of the
// module and everything under it: a layer (a top-level folder) or a
// package inside one that has rules of its own. A package follows the
// rules of the deepest unit that holds it; what lies inside that unit is
// always allowed. Units that do not exist yet are simply absent from the
// module and never match.
var forbidden = map[string][]string{
	"proto":  {"engine"},
	"shm":    {"engine", "proto"},
	"agent":  {"engine"},
	"engine": {"agent", "store"},
	// The static-file server sits under the engine and knows nothing of
	// it: the engine reaches it through a narrow interface.
	"engine/static": {"engine", "agent", "store", "worker"},
	"store":         {"engine"},
	"worker":        {"agent", "store"},
	// The cluster is the agent's: it knows the records it carries and
	// nothing of the engine, the workers or the store.
	"cluster": {"engine", "agent", "worker", "store", "shm", "link", "proto"},
	// The contract between a node's processes: the records (nodemsg) and
	// the rings that carry them (link) know neither side.
	"nodemsg": {"engine", "agent", "worker", "store", "shm", "link", "proto"},
	"link":    {"engine", "agent", "worker", "store", "proto"},
}

type pkg struct {
	ImportPath   string
	Deps         []string
	Imports      []string
	TestImports  []string
	XTestImports []string
	Error        *struct{ Err string }
}

// layerOf returns the top-level folder of a module package, "" for a
// package outside the module or the module root.
func layerOf(importPath string) string {
	rest, ok := strings.CutPrefix(importPath, module+"/")
	if !ok {
		return ""
	}
	layer, _, _ := strings.Cut(rest, "/")
	return layer
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == "/dev/null" {
		t.Fatal("not inside a module")
	}
	return filepath.Dir(gomod)
}

// listPackages runs go list over the whole module.
func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Deps,Imports,TestImports,XTestImports,Error", "./...")
	cmd.Dir = moduleRoot(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// within reports whether importPath is the module's folder unit or lies
// under it.
func within(importPath, unit string) bool {
	rest, ok := strings.CutPrefix(importPath, module+"/")
	return ok && unit != "" && (rest == unit || strings.HasPrefix(rest, unit+"/"))
}

// unitOf returns the deepest unit of rules that holds importPath, "" for
// none.
func unitOf(importPath string, rules map[string][]string) string {
	unit := ""
	for u := range rules {
		if within(importPath, u) && len(u) > len(unit) {
			unit = u
		}
	}
	return unit
}

// violations returns every forbidden arrow in pkgs, one line each, and the
// set of layers seen.
func violations(pkgs []pkg, forbidden map[string][]string) (problems []string, seen map[string]bool) {
	byPath := make(map[string]*pkg, len(pkgs))
	for i := range pkgs {
		byPath[pkgs[i].ImportPath] = &pkgs[i]
	}
	seen = map[string]bool{}
	for _, p := range pkgs {
		seen[layerOf(p.ImportPath)] = true
		unit := unitOf(p.ImportPath, forbidden)
		bad := forbidden[unit]
		if len(bad) == 0 {
			continue
		}
		// Everything p's code and tests pull in: the transitive deps of the
		// package, and those of each package its tests import.
		deps := map[string]string{} // dep → how it is reached
		for _, d := range p.Deps {
			deps[d] = "imports"
		}
		for _, ti := range append(append([]string(nil), p.TestImports...), p.XTestImports...) {
			if ti == p.ImportPath {
				continue
			}
			if _, ok := deps[ti]; !ok {
				deps[ti] = "test imports"
			}
			if tp := byPath[ti]; tp != nil {
				for _, d := range tp.Deps {
					if _, ok := deps[d]; !ok {
						deps[d] = "test imports (via " + ti + ")"
					}
				}
			}
		}
		for d, how := range deps {
			if within(d, unit) {
				continue
			}
			for _, b := range bad {
				if within(d, b) {
					problems = append(problems, p.ImportPath+" "+how+" "+d)
				}
			}
		}
	}
	sort.Strings(problems)
	return problems, seen
}

func TestLayerDependencies(t *testing.T) {
	pkgs := listPackages(t)
	for _, p := range pkgs {
		if p.Error != nil {
			t.Logf("%s: go list reported: %s (checking what it could list)", p.ImportPath, p.Error.Err)
		}
	}
	problems, seen := violations(pkgs, forbidden)
	for _, pr := range problems {
		t.Errorf("layering violation: %s", pr)
	}
	// Sanity: the check saw the module's core layers, and an arrow that is
	// allowed (engine → proto) shows up, so the parsing above works.
	for _, l := range []string{"proto", "engine"} {
		if !seen[l] {
			t.Errorf("go list did not report package %s/%s", module, l)
		}
	}
	for _, p := range pkgs {
		if p.ImportPath == module+"/engine" && !contains(p.Imports, module+"/proto") {
			t.Errorf("engine does not import proto: the dependency data looks wrong: %v", p.Imports)
		}
	}
}

// TestViolations runs the checker on a made-up module with every kind of
// arrow, so that the rules are known to bite before a real violation.
func TestViolations(t *testing.T) {
	m := func(s string) string { return module + "/" + s }
	pkgs := []pkg{
		// Deps is transitive, as go list reports it: proto reaches engine
		// through util.
		{ImportPath: m("proto"), Deps: []string{"fmt", m("engine"), m("util")}},
		{ImportPath: m("util"), Deps: []string{m("engine")}},
		{ImportPath: m("engine"), Deps: []string{m("proto"), m("util")}},
		{ImportPath: m("engine/inner"), Deps: []string{m("store/kv")}},
		{ImportPath: m("store/kv"), Deps: []string{"os"}},
		{ImportPath: m("shm"), Deps: []string{"sync"}, XTestImports: []string{m("proto")}},
		{ImportPath: m("agent"), TestImports: []string{m("testutil")}},
		{ImportPath: m("testutil"), Deps: []string{m("engine")}},
		{ImportPath: m("worker"), Deps: []string{m("engine"), m("proto"), m("shm")}}, // allowed
		// A unit inside a layer (Deps transitive, as above): its own
		// rules, its own subtree allowed, the layer around it forbidden.
		{ImportPath: m("engine/static"), Deps: []string{m("engine/static/inner"), m("engine/fanout"), m("worker")}, TestImports: []string{m("engine")}},
		{ImportPath: m("engine/static/inner"), Deps: []string{m("engine/fanout"), m("worker")}},
		{ImportPath: m("engine/fanout"), Deps: []string{m("engine/static")}}, // allowed
	}
	got, _ := violations(pkgs, forbidden)
	want := []string{
		m("agent") + " test imports (via " + m("testutil") + ") " + m("engine"),
		m("engine/inner") + " imports " + m("store/kv"),
		m("engine/static") + " imports " + m("engine/fanout"),
		m("engine/static") + " imports " + m("worker"),
		m("engine/static") + " test imports " + m("engine"),
		m("engine/static/inner") + " imports " + m("engine/fanout"),
		m("engine/static/inner") + " imports " + m("worker"),
		m("proto") + " imports " + m("engine"),
		m("shm") + " test imports (via " + m("proto") + ") " + m("engine"),
		m("shm") + " test imports " + m("proto"),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("violations:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestLayerOf(t *testing.T) {
	tests := map[string]string{
		module + "/engine":          "engine",
		module + "/engine/internal": "engine",
		module + "/proto":           "proto",
		module:                      "",
		module + "x/engine":         "",
		"github.com/gobwas/ws":      "",
		"fmt":                       "",
	}
	for in, want := range tests {
		if got := layerOf(in); got != want {
			t.Errorf("layerOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
