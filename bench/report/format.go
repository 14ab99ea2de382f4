package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// dash stands for a figure that is missing.
const dash = "—"

// val is a figure that may be missing.
type val struct {
	v  float64
	ok bool
}

func some(v float64) val { return val{v, true} }

// fmtFn formats a present figure.
type fmtFn func(float64) string

func (x val) fmt(f fmtFn) string {
	if !x.ok || math.IsNaN(x.v) || math.IsInf(x.v, 0) {
		return dash
	}
	return f(x.v)
}

// num formats a count or a rate: thousands separated, decimals for small
// values (3 significant digits below 100).
func num(v float64) string {
	a := math.Abs(v)
	switch {
	case v == 0:
		return "0"
	case a >= 100 || v == math.Trunc(v):
		return thousands(int64(math.Round(v)))
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

// dec formats with up to d decimals, trailing zeros kept (0.25 µs).
func dec(d int) fmtFn {
	return func(v float64) string {
		if math.Abs(v) >= 1000 {
			return thousands(int64(math.Round(v)))
		}
		return strconv.FormatFloat(v, 'f', d, 64)
	}
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// sig3 formats with 3 significant digits, no exponent.
func sig3(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case a == 0:
		return "0"
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

// micros formats a duration in µs as µs, ms or s.
func micros(v float64) string {
	a := math.Abs(v)
	switch {
	case a < 1000:
		return sig3(v) + " µs"
	case a < 1e6:
		return sig3(v/1e3) + " ms"
	default:
		return sig3(v/1e6) + " s"
	}
}

// millis formats a duration in ms.
func millis(v float64) string { return micros(v * 1000) }

// seconds formats a duration in s.
func seconds(v float64) string { return micros(v * 1e6) }

// kib formats a size in KiB as KiB, MiB or GiB.
func kib(v float64) string {
	a := math.Abs(v)
	switch {
	case a < 1024:
		return whole(v) + " KiB"
	case a < 1024*1024:
		return whole(v/1024) + " MiB"
	default:
		return whole(v/(1024*1024)) + " GiB"
	}
}

// whole is sig3, without decimals for a whole number (1 KiB, not 1.00 KiB).
func whole(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatInt(int64(v), 10)
	}
	return sig3(v)
}

func mib(v float64) string { return kib(v * 1024) }

// bytesFmt formats a size in bytes.
func bytesFmt(v float64) string {
	if math.Abs(v) < 1024 {
		return num(v) + " B"
	}
	return kib(v / 1024)
}

// ratio formats a ratio as 21.0×, 0.80×, 0.029×.
func ratio(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64) + "×"
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64) + "×"
	case a >= 0.1 || a == 0:
		return strconv.FormatFloat(v, 'f', 2, 64) + "×"
	default:
		return strconv.FormatFloat(v, 'g', 2, 64) + "×"
	}
}

// share formats a share of one CPU.
func share(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

// div returns a/b, missing when either is or b is 0.
func div(a, b val) val {
	if !a.ok || !b.ok || b.v == 0 {
		return val{}
	}
	return some(a.v / b.v)
}

// when formats an RFC 3339 time as "2026-11-27 10:32 UTC"; other text as it is.
func when(s string) string {
	if s == "" {
		return dash
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return s
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

// took formats seconds as "3 min 5 s".
func took(s float64) string {
	d := time.Duration(s) * time.Second
	switch {
	case d <= 0:
		return dash
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min %d s", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%d h %d min", int(d.Hours()), int(d.Minutes())%60)
	}
}

// table is a Markdown table.
type table struct {
	head  []string
	right []bool // right-aligned columns
	rows  [][]string
}

func newTable(head ...string) *table {
	t := &table{head: head, right: make([]bool, len(head))}
	for i := 1; i < len(head); i++ {
		t.right[i] = true
	}
	return t
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) String() string {
	var b strings.Builder
	row := func(cells []string, empty string) {
		b.WriteString("|")
		for i := range t.head {
			c := empty
			if i < len(cells) && cells[i] != "" {
				c = cells[i]
			}
			b.WriteString(" " + cell(c) + " |")
		}
		b.WriteString("\n")
	}
	row(t.head, "")
	b.WriteString("|")
	for i := range t.head {
		if t.right[i] {
			b.WriteString("---:|")
		} else {
			b.WriteString("---|")
		}
	}
	b.WriteString("\n")
	for _, r := range t.rows {
		row(r, dash)
	}
	return b.String()
}

// cell escapes what would break a table cell.
func cell(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	return strings.ReplaceAll(s, "|", `\|`)
}

// code puts s in backticks, safely.
func code(s string) string {
	if strings.Contains(s, "`") {
		return "``" + s + "``"
	}
	return "`" + s + "`"
}

// timeSpan parses two RFC 3339 times.
func timeSpan(a, b string) (time.Time, time.Time, error) {
	t0, err := time.Parse(time.RFC3339, a)
	if err != nil {
		return t0, t0, err
	}
	t1, err := time.Parse(time.RFC3339, b)
	return t0, t1, err
}
