package nodemsg

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/records.txt from the encoders")

const goldenFile = "records.txt"

const goldenHeader = `# Test vectors of package nodemsg, one record a line: a name, a colon, and
# the record's bytes in hex, the kind byte first (see the package doc).
# TestGolden checks that the encoders write exactly these bytes and that
# Decode reads them back. After a deliberate change of layout:
#   go test ./nodemsg/ -run TestGolden -update
`

// readGolden parses testdata/records.txt into name → record, in file order.
func readGolden(t *testing.T) (names []string, recs map[string][]byte) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", goldenFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs = map[string][]byte{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		name, hx, ok := strings.Cut(text, ":")
		rec, err := hex.DecodeString(strings.ReplaceAll(hx, " ", ""))
		if !ok || err != nil || len(rec) == 0 {
			t.Fatalf("%s:%d: want \"name: hex bytes\"", goldenFile, line)
		}
		if _, dup := recs[name]; dup {
			t.Fatalf("%s:%d: %q twice", goldenFile, line, name)
		}
		names = append(names, name)
		recs[name] = rec
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return names, recs
}

func writeGolden(t *testing.T, vs []vector) {
	t.Helper()
	var b bytes.Buffer
	b.WriteString(goldenHeader)
	for _, v := range vs {
		fmt.Fprintf(&b, "%s: % x\n", v.name, v.rec)
	}
	if err := os.WriteFile(filepath.Join("testdata", goldenFile), b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestGolden checks the encoders against the bytes of testdata, decodes
// those bytes, and checks that every record kind has a vector.
func TestGolden(t *testing.T) {
	vs := vectors()
	if *update {
		writeGolden(t, vs)
	}
	names, golden := readGolden(t)
	if len(names) != len(vs) {
		t.Errorf("%s has %d vectors, the tests %d", goldenFile, len(names), len(vs))
	}
	kinds := map[byte]bool{}
	for _, v := range vs {
		want, ok := golden[v.name]
		if !ok {
			t.Errorf("%s: no vector %q", goldenFile, v.name)
			continue
		}
		if !bytes.Equal(v.rec, want) {
			t.Errorf("%s: encoded as % x, golden % x", v.name, v.rec, want)
		}
		var m Msg
		if err := Decode(want, &m); err != nil {
			t.Errorf("%s: golden bytes: %v", v.name, err)
			continue
		}
		if !sameMsg(&m, &v.want) {
			t.Errorf("%s: golden bytes decode as %+v, want %+v", v.name, m, v.want)
		}
		kinds[m.Kind] = true
	}
	for _, k := range []byte{KindReady, KindOpened, KindClosed, KindSub, KindUnsub, KindPublish, KindStats,
		KindUser, KindRefused, KindDone, KindDeliver, KindKick, KindEvict, KindTickets} {
		if !kinds[k] {
			t.Errorf("no golden vector of kind %d", k)
		}
	}
}
