package main

// A small SVG writer for the report's figures: panels stacked one above
// the other, each with a logarithmic x axis and a logarithmic y axis,
// one line per series with a marker at each point, a legend, and dashed
// vertical lines with a note (where a series stops). The file is drawn
// on a white background so that it reads alike in GitHub's light and
// dark views.

import (
	"fmt"
	"html"
	"math"
	"sort"
	"strings"
)

// xy is one point of a series.
type xy struct{ x, y float64 }

// series is one line of a panel.
type series struct {
	key    string // what the markers carry as data-series
	name   string // the legend's text
	color  string
	marker string // circle, square or triangle
	points []xy
}

// vline is a dashed vertical line across every panel, with a note at its
// top.
type vline struct {
	x     float64
	label string
}

// panel is one plot.
type panel struct {
	title  string
	ylabel string
	ytick  func(float64) string
	series []series
}

// chart is the whole figure.
type chart struct {
	title      string
	xlabel     string
	xtick      func(float64) string
	xmin, xmax float64 // the x range shown at least
	panels     []panel
	vlines     []vline
	legend     []series // the legend's entries (a series without points says so)
}

// The figure's layout, in pixels.
const (
	svgWidth    = 760
	svgHeader   = 78  // title and legend
	svgPanel    = 300 // one panel with its title and x labels
	plotLeft    = 84
	plotRight   = 28
	plotTop     = 34 // from the panel's top
	plotHeight  = 206
	plotPad     = 14 // between the frame and the ends of the axes
	svgFontSize = 13
)

// axis maps values to pixels on a logarithmic scale.
type axis struct {
	lo, hi   float64 // the values at the ends
	from, to float64 // their pixels
}

func (a axis) at(v float64) float64 {
	f := (math.Log10(v) - math.Log10(a.lo)) / (math.Log10(a.hi) - math.Log10(a.lo))
	return a.from + f*(a.to-a.from)
}

// niceSteps are the mantissas of the ticks of a logarithmic axis.
var niceSteps = []float64{1, 2, 5}

// niceLow is the largest of 1, 2, 5 × 10^k not above v (v > 0).
func niceLow(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for i := len(niceSteps) - 1; i >= 0; i-- {
		if s := niceSteps[i] * p; s <= v*(1+1e-9) {
			return s
		}
	}
	return p
}

// niceHigh is the smallest of 1, 2, 5 × 10^k not below v (v > 0).
func niceHigh(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range niceSteps {
		if s := m * p; s >= v*(1-1e-9) {
			return s
		}
	}
	return 10 * p
}

// logTicks are the ticks from lo to hi: 1, 2 and 5 × 10^k over up to three
// decades, the powers of ten alone over more.
func logTicks(lo, hi float64) []float64 {
	steps := niceSteps
	if math.Log10(hi/lo) > 3.01 {
		steps = []float64{1}
	}
	var out []float64
	for p := math.Pow(10, math.Floor(math.Log10(lo))); p <= hi*10; p *= 10 {
		for _, m := range steps {
			if v := m * p; v >= lo*(1-1e-9) && v <= hi*(1+1e-9) {
				out = append(out, v)
			}
		}
	}
	return out
}

// logRange is the range of an axis showing lo to hi (lo <= hi, both > 0):
// from and to the nearest 1, 2 or 5 × 10^k, or the nearest powers of ten
// when that spans more than three decades (only those are labelled then).
func logRange(lo, hi float64) (float64, float64) {
	lo, hi = niceLow(lo), niceHigh(hi)
	if hi <= lo {
		hi = niceHigh(lo * 1.01)
	}
	if math.Log10(hi/lo) > 3.01 {
		lo, hi = math.Pow(10, math.Floor(math.Log10(lo)+1e-9)), math.Pow(10, math.Ceil(math.Log10(hi)-1e-9))
	}
	return lo, hi
}

// minorTicks are 2 to 9 × 10^k between lo and hi, for grid lines without
// labels, when logTicks labels the powers of ten only.
func minorTicks(lo, hi float64) []float64 {
	if math.Log10(hi/lo) <= 3.01 {
		return nil
	}
	var out []float64
	for p := math.Pow(10, math.Floor(math.Log10(lo))); p < hi; p *= 10 {
		for m := 2.0; m < 10; m++ {
			if v := m * p; v > lo && v < hi {
				out = append(out, v)
			}
		}
	}
	return out
}

// plottable reports whether a point can be placed on log axes.
func plottable(p xy) bool {
	return p.x > 0 && p.y > 0 && !math.IsInf(p.x, 0) && !math.IsInf(p.y, 0) && !math.IsNaN(p.x) && !math.IsNaN(p.y)
}

// xRange is the x range of the chart: its own, widened to every point.
func (c *chart) xRange() (float64, float64) {
	lo, hi := c.xmin, c.xmax
	for _, p := range c.panels {
		for _, s := range p.series {
			for _, q := range s.points {
				if plottable(q) {
					lo, hi = math.Min(lo, q.x), math.Max(hi, q.x)
				}
			}
		}
	}
	return logRange(lo, hi)
}

// yRange is a panel's y range (ok false when it has no point).
func (p *panel) yRange() (lo, hi float64, ok bool) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, s := range p.series {
		for _, q := range s.points {
			if plottable(q) {
				lo, hi, ok = math.Min(lo, q.y), math.Max(hi, q.y), true
			}
		}
	}
	if !ok {
		return 1, 10, false
	}
	lo, hi = logRange(lo, hi)
	return lo, hi, true
}

// svg renders the chart.
func (c *chart) svg() []byte {
	var b strings.Builder
	h := svgHeader + len(c.panels)*svgPanel + 8
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="%d">`+"\n",
		svgWidth, h, svgWidth, h, svgFontSize)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", svgWidth, h)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="15" font-weight="bold" fill="#111">%s</text>`+"\n", plotLeft-60, esc(c.title))
	c.writeLegend(&b)
	xlo, xhi := c.xRange()
	for i := range c.panels {
		x := axis{lo: xlo, hi: xhi, from: plotLeft + plotPad, to: svgWidth - plotRight - plotPad}
		c.writePanel(&b, &c.panels[i], svgHeader+i*svgPanel, x)
	}
	b.WriteString("</svg>\n")
	return []byte(b.String())
}

// writeLegend writes one entry per series in a row under the title.
func (c *chart) writeLegend(b *strings.Builder) {
	x := float64(plotLeft - 60)
	const y = 54
	for _, s := range c.legend {
		name := s.name
		if len(s.points) == 0 {
			name += " (not measured)"
		}
		fmt.Fprintf(b, `<g class="legend" data-series="%s">`, esc(s.key))
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="2"/>`, x, y-4, x+28, y-4, s.color)
		writeMarker(b, s, x+14, y-4)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" fill="#111">%s</text></g>`+"\n", x+36, y, esc(name))
		x += 36 + 7.2*float64(len([]rune(name))) + 28
	}
}

// writePanel writes one panel whose top is at top.
func (c *chart) writePanel(b *strings.Builder, p *panel, top int, x axis) {
	ylo, yhi, ok := p.yRange()
	py0, py1 := float64(top+plotTop), float64(top+plotTop+plotHeight)
	px0, px1 := float64(plotLeft), float64(svgWidth-plotRight)
	y := axis{lo: ylo, hi: yhi, from: py1 - plotPad, to: py0 + plotPad}
	fmt.Fprintf(b, `<g class="panel">`+"\n")
	fmt.Fprintf(b, `<text x="%d" y="%d" font-size="14" font-weight="bold" fill="#111">%s</text>`+"\n", plotLeft-60, top+18, esc(p.title))
	writeXAxis(b, x, py0, py1, c.xtick, c.xlabel)
	if ok {
		writeYAxis(b, y, px0, px1, p.ytick)
	} else {
		fmt.Fprintf(b, `<text class="nodata" x="%.1f" y="%.1f" text-anchor="middle" fill="#666">no data</text>`+"\n", (px0+px1)/2, (py0+py1)/2)
	}
	fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="middle" transform="rotate(-90 %d %.1f)" fill="#111">%s</text>`+"\n",
		plotLeft-66, (py0+py1)/2, plotLeft-66, (py0+py1)/2, esc(p.ylabel))
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#333"/>`+"\n", px0, py0, px1-px0, py1-py0)
	for _, v := range c.vlines {
		writeVLine(b, v, x, py0, py1)
	}
	if ok {
		for _, s := range p.series {
			writeSeries(b, s, x, y)
		}
	}
	b.WriteString("</g>\n")
}

// writeXAxis writes the x ticks, their grid lines and labels, and the
// axis's label.
func writeXAxis(b *strings.Builder, x axis, py0, py1 float64, tick func(float64) string, label string) {
	for _, v := range minorTicks(x.lo, x.hi) {
		px := x.at(v)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#f0f0f0"/>`+"\n", px, py0, px, py1)
	}
	for _, v := range logTicks(x.lo, x.hi) {
		px := x.at(v)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e3e3e3"/>`, px, py0, px, py1)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`, px, py1, px, py1+5)
		fmt.Fprintf(b, `<text class="xtick" x="%.1f" y="%.1f" text-anchor="middle" fill="#111">%s</text>`+"\n", px, py1+19, esc(tick(v)))
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#111">%s</text>`+"\n", (x.from+x.to)/2, py1+39, esc(label))
}

// writeYAxis writes the y ticks, their grid lines and labels.
func writeYAxis(b *strings.Builder, y axis, px0, px1 float64, tick func(float64) string) {
	for _, v := range minorTicks(y.lo, y.hi) {
		py := y.at(v)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#f0f0f0"/>`+"\n", px0, py, px1, py)
	}
	for _, v := range logTicks(y.lo, y.hi) {
		py := y.at(v)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e3e3e3"/>`, px0, py, px1, py)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`, px0-5, py, px0, py)
		fmt.Fprintf(b, `<text class="ytick" x="%.1f" y="%.1f" text-anchor="end" fill="#111">%s</text>`+"\n", px0-8, py+4, esc(tick(v)))
	}
}

// writeVLine writes a dashed vertical line with its note, when x is shown.
func writeVLine(b *strings.Builder, v vline, x axis, py0, py1 float64) {
	if v.x < x.lo || v.x > x.hi {
		return
	}
	px := x.at(v.x)
	fmt.Fprintf(b, `<line class="vline" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#888" stroke-dasharray="5 4"/>`, px, py0, px, py1)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="11" fill="#555">%s</text>`+"\n", px+5, py0+14, esc(v.label))
}

// writeSeries writes a series' line and markers, its points in x order,
// those that cannot be placed on log axes left out.
func writeSeries(b *strings.Builder, s series, x, y axis) {
	var pts []xy
	for _, p := range s.points {
		if plottable(p) {
			pts = append(pts, p)
		}
	}
	sort.Slice(pts, func(i, j int) bool { return pts[i].x < pts[j].x })
	if len(pts) == 0 {
		return
	}
	fmt.Fprintf(b, `<g class="series" data-series="%s">`+"\n", esc(s.key))
	if len(pts) > 1 {
		var coords []string
		for _, p := range pts {
			coords = append(coords, fmt.Sprintf("%.1f,%.1f", x.at(p.x), y.at(p.y)))
		}
		fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(coords, " "), s.color)
	}
	for _, p := range pts {
		writeMarker(b, s, x.at(p.x), y.at(p.y))
		b.WriteString("\n")
	}
	b.WriteString("</g>\n")
}

// writeMarker writes one marker centred on (px, py).
func writeMarker(b *strings.Builder, s series, px, py float64) {
	fmt.Fprintf(b, `<g class="pt" transform="translate(%.1f,%.1f)">`, px, py)
	switch s.marker {
	case "square":
		fmt.Fprintf(b, `<rect x="-4.5" y="-4.5" width="9" height="9" fill="%s" stroke="#fff"/>`, s.color)
	case "triangle":
		fmt.Fprintf(b, `<polygon points="0,-6 5.5,4 -5.5,4" fill="%s" stroke="#fff"/>`, s.color)
	default:
		fmt.Fprintf(b, `<circle r="5" fill="%s" stroke="#fff"/>`, s.color)
	}
	b.WriteString("</g>")
}

// esc escapes text for SVG.
func esc(s string) string { return html.EscapeString(s) }
