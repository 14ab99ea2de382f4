package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// node is an element of a decoded SVG.
type node struct {
	XMLName  xml.Name
	Attrs    []xml.Attr `xml:",any,attr"`
	Children []node     `xml:",any"`
	Text     string     `xml:",chardata"`
}

func (n *node) attr(name string) string {
	for _, a := range n.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// walk calls f on n and every element under it.
func (n *node) walk(f func(*node)) {
	f(n)
	for i := range n.Children {
		n.Children[i].walk(f)
	}
}

// text is the text of n and everything under it.
func (n *node) text() string {
	var b strings.Builder
	n.walk(func(m *node) { b.WriteString(m.Text) })
	return b.String()
}

// decodeSVG checks that b is well-formed XML (every token, strictly) and
// returns its root.
func decodeSVG(t *testing.T, b []byte) *node {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	for {
		_, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, b)
		}
	}
	var root node
	if err := xml.Unmarshal(b, &root); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if root.XMLName.Local != "svg" || root.XMLName.Space != "http://www.w3.org/2000/svg" {
		t.Fatalf("root element %v, want svg in the SVG namespace", root.XMLName)
	}
	return &root
}

// markers returns, per panel, the centres of each series' markers by
// series key, in document order.
func markers(t *testing.T, root *node) []map[string][]xy {
	t.Helper()
	var out []map[string][]xy
	root.walk(func(p *node) {
		if p.attr("class") != "panel" {
			return
		}
		got := map[string][]xy{}
		p.walk(func(s *node) {
			if s.attr("class") != "series" {
				return
			}
			key := s.attr("data-series")
			s.walk(func(m *node) {
				if m.attr("class") != "pt" {
					return
				}
				var c xy
				if _, err := fmt.Sscanf(m.attr("transform"), "translate(%g,%g)", &c.x, &c.y); err != nil {
					t.Fatalf("marker transform %q: %v", m.attr("transform"), err)
				}
				got[key] = append(got[key], c)
			})
		})
		out = append(out, got)
	})
	return out
}

func testChart(pts ...xy) *chart {
	s := series{key: "a", name: "A", color: "#123456", marker: "square", points: pts}
	return &chart{title: "t", xlabel: "connections", xtick: siCount, xmin: 1e4, xmax: 1e6,
		panels: []panel{{title: "p", ylabel: "y", ytick: siCount, series: []series{s}}},
		legend: []series{s}}
}

func TestSVGWellFormedAndEscaped(t *testing.T) {
	c := testChart(xy{1e4, 5}, xy{1e5, 50})
	c.title = `memory <per> "connection" & fan-out`
	c.vlines = []vline{{2e4, "limit <20,000>"}}
	root := decodeSVG(t, c.svg())
	all := root.text()
	for _, want := range []string{c.title, "limit <20,000>", "10k", "100k", "1M", "connections"} {
		if !strings.Contains(all, want) {
			t.Errorf("SVG text lacks %q", want)
		}
	}
	var w, h string = root.attr("width"), root.attr("height")
	if w == "" || h == "" || root.attr("viewBox") == "" {
		t.Errorf("root needs width, height and viewBox (GitHub scales by them): %v", root.Attrs)
	}
}

// Points are placed in x order along the axis, at distances proportional
// to the logarithm of their ratio, and a larger value is drawn higher.
func TestSVGLogAxis(t *testing.T) {
	in := []xy{{3e5, 4}, {1e4, 1}, {1e6, 8}, {3e4, 2}, {1e5, 3}} // not in x order
	got := markers(t, decodeSVG(t, testChart(in...).svg()))
	if len(got) != 1 || len(got[0]["a"]) != len(in) {
		t.Fatalf("markers: %v, want one panel with %d points", got, len(in))
	}
	pts := got[0]["a"]
	for i := 1; i < len(pts); i++ {
		if pts[i].x <= pts[i-1].x {
			t.Errorf("marker %d at x=%.1f not right of marker %d at x=%.1f", i, pts[i].x, i-1, pts[i-1].x)
		}
		if pts[i].y >= pts[i-1].y {
			t.Errorf("marker %d (larger value) at y=%.1f not above marker %d at y=%.1f", i, pts[i].y, i-1, pts[i-1].y)
		}
	}
	// 10k → 100k and 100k → 1M are one decade each; 10k → 30k is
	// log10(3) of one.
	dec1, dec2 := pts[2].x-pts[0].x, pts[4].x-pts[2].x
	if math.Abs(dec1-dec2) > 0.25 || dec1 < 100 {
		t.Errorf("decades %.1f and %.1f px wide, want equal", dec1, dec2)
	}
	if r := (pts[1].x - pts[0].x) / dec1; math.Abs(r-math.Log10(3)) > 0.01 {
		t.Errorf("10k → 30k is %.3f of a decade, want %.3f", r, math.Log10(3))
	}
}

// A series without points is in the legend as not measured and draws
// nothing; points that cannot be on log axes are left out; a panel with
// no point says so.
func TestSVGMissingSeries(t *testing.T) {
	full := series{key: "full", name: "Full", color: "#111111", points: []xy{{1e4, 2}, {1e5, 3}}}
	holes := series{key: "holes", name: "Holes", color: "#222222", points: []xy{{1e4, 0}, {2e4, math.NaN()}, {3e4, 7}}}
	empty := series{key: "empty", name: "Empty", color: "#333333"}
	c := &chart{title: "t", xlabel: "x", xtick: siCount, xmin: 1e4, xmax: 1e6,
		panels: []panel{
			{title: "one", ylabel: "y", ytick: siCount, series: []series{full, holes, empty}},
			{title: "two", ylabel: "y", ytick: siCount, series: []series{empty}},
		},
		legend: []series{full, holes, empty}}
	b := c.svg()
	if bytes.Contains(b, []byte("NaN")) || bytes.Contains(b, []byte("Inf")) {
		t.Fatalf("SVG holds NaN or Inf:\n%s", b)
	}
	root := decodeSVG(t, b)
	got := markers(t, root)
	if len(got) != 2 {
		t.Fatalf("%d panels, want 2", len(got))
	}
	if n := len(got[0]["full"]); n != 2 {
		t.Errorf("full: %d markers, want 2", n)
	}
	if n := len(got[0]["holes"]); n != 1 {
		t.Errorf("holes: %d markers, want 1 (zero and NaN left out)", n)
	}
	if _, ok := got[0]["empty"]; ok {
		t.Error("a series without points drew a group")
	}
	if len(got[1]) != 0 {
		t.Errorf("second panel drew %v", got[1])
	}
	var nodata int
	root.walk(func(n *node) {
		if n.attr("class") == "nodata" {
			nodata++
		}
	})
	if nodata != 1 {
		t.Errorf("%d \"no data\" notes, want 1 (the second panel)", nodata)
	}
	if !strings.Contains(root.text(), "Empty (not measured)") {
		t.Error("legend lacks \"Empty (not measured)\"")
	}
}

func TestNiceAndTicks(t *testing.T) {
	for _, c := range []struct{ v, low, high float64 }{
		{1e4, 1e4, 1e4}, {18000, 1e4, 2e4}, {3.1, 2, 5}, {0.7, 0.5, 1}, {999000, 5e5, 1e6},
	} {
		if got := niceLow(c.v); math.Abs(got-c.low) > 1e-9*c.low {
			t.Errorf("niceLow(%g) = %g, want %g", c.v, got, c.low)
		}
		if got := niceHigh(c.v); math.Abs(got-c.high) > 1e-9*c.high {
			t.Errorf("niceHigh(%g) = %g, want %g", c.v, got, c.high)
		}
	}
	var labels []string
	for _, v := range logTicks(1e4, 1e6) {
		labels = append(labels, siCount(v))
	}
	if got, want := strings.Join(labels, " "), "10k 20k 50k 100k 200k 500k 1M"; got != want {
		t.Errorf("ticks %q, want %q", got, want)
	}
	if got := len(logTicks(1, 1e6)); got != 7 {
		t.Errorf("six decades: %d ticks, want the 7 powers of ten", got)
	}
	for _, c := range []struct{ lo, hi, wlo, whi float64 }{
		{1e4, 1e6, 1e4, 1e6}, {18000, 2e5, 1e4, 2e5}, {2774, 2.2e6, 1e3, 1e7}, {5, 5, 5, 10},
	} {
		if lo, hi := logRange(c.lo, c.hi); math.Abs(lo-c.wlo) > 1e-9*c.wlo || math.Abs(hi-c.whi) > 1e-9*c.whi {
			t.Errorf("logRange(%g, %g) = %g, %g, want %g, %g", c.lo, c.hi, lo, hi, c.wlo, c.whi)
		}
	}
	if n := len(minorTicks(1e3, 1e7)); n != 32 {
		t.Errorf("minor ticks over 4 decades: %d, want 32", n)
	}
}

// The chart of a scale-curve result: a series per server in both panels,
// the open-file limit marked, a server whose fan-out is missing left out
// of that panel only.
func TestScaleCurveChart(t *testing.T) {
	res := map[string]any{}
	raw := `{"open_file_limit": 20000, "settings": {"servers": "zenconn baseline centrifugo"}, "points": [
	  {"server": "zenconn", "conns": 100000, "idle": {"pss_kib_per_conn_total": 3.1}, "fanout": {"deliveries_per_sec": 900000}},
	  {"server": "zenconn", "conns": 10000, "idle": {"pss_kib_per_conn_total": 6.5}, "fanout": {"deliveries_per_sec": 1000000}},
	  {"server": "baseline", "conns": 10000, "idle": {"pss_kib_per_conn_total": 45}, "fanout": null, "exit": 1}]}`
	if err := json.Unmarshal([]byte(raw), &res); err != nil {
		t.Fatal(err)
	}
	root := decodeSVG(t, scaleCurveChart(res).svg())
	got := markers(t, root)
	if len(got) != 2 {
		t.Fatalf("%d panels, want 2", len(got))
	}
	if len(got[0]["zenconn"]) != 2 || len(got[0]["baseline"]) != 1 || len(got[1]["zenconn"]) != 2 {
		t.Errorf("markers %v", got)
	}
	if _, ok := got[1]["baseline"]; ok {
		t.Error("baseline drawn in the fan-out panel without a fan-out figure")
	}
	txt := root.text()
	for _, want := range []string{"one process: open-file limit (20,000)", "Centrifugo (one process) (not measured)", "KiB"} {
		if !strings.Contains(txt, want) {
			t.Errorf("SVG text lacks %q", want)
		}
	}
}

// report render writes the plot beside RESULTS.md when there is a curve,
// and the page embeds it.
func TestRenderWritesScaleCurve(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "RESULTS.md")
	var buf bytes.Buffer
	if rc := run([]string{"--results", "testdata/results", "--notes", "", "--scripts", "", "--out", out}, &buf, now); rc != 0 {
		t.Fatalf("exit %d", rc)
	}
	svg, err := os.ReadFile(filepath.Join(dir, scaleCurveSVG))
	if err != nil {
		t.Fatal(err)
	}
	decodeSVG(t, svg)
	page, _ := os.ReadFile(out)
	if !strings.Contains(string(page), "](scale-curve.svg)") {
		t.Error("RESULTS.md does not embed scale-curve.svg")
	}
	// Without a curve, no plot is written.
	empty := t.TempDir()
	out = filepath.Join(empty, "RESULTS.md")
	if rc := run([]string{"--results", t.TempDir(), "--notes", "", "--scripts", "", "--out", out}, &buf, now); rc != 0 {
		t.Fatalf("exit %d", rc)
	}
	if _, err := os.Stat(filepath.Join(empty, scaleCurveSVG)); err == nil {
		t.Error("scale-curve.svg written without a curve")
	}
}
