package main

import (
	"fmt"
	"sort"
	"strings"
)

// at walks decoded JSON by keys; a key absent as such but holding dots
// ("latency_us.p99") is tried as a path of nested objects too. nil when
// anything is missing.
func at(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		next, ok := m[k]
		if !ok && strings.Contains(k, ".") {
			next = at(m, strings.Split(k, ".")...)
			ok = next != nil
		}
		if !ok {
			return nil
		}
		v = next
	}
	return v
}

// numAt is at for a number.
func numAt(v any, keys ...string) val {
	switch x := at(v, keys...).(type) {
	case float64:
		return some(x)
	case int:
		return some(float64(x))
	}
	return val{}
}

// strAt is at for a string ("" when missing).
func strAt(v any, keys ...string) string {
	switch x := at(v, keys...).(type) {
	case string:
		return x
	case float64:
		return num(x)
	case bool:
		return fmt.Sprint(x)
	}
	return ""
}

// objAt is at for an object.
func objAt(v any, keys ...string) map[string]any {
	m, _ := at(v, keys...).(map[string]any)
	return m
}

// listAt is at for an array.
func listAt(v any, keys ...string) []any {
	l, _ := at(v, keys...).([]any)
	return l
}

// strList returns the strings of an array.
func strList(v any, keys ...string) []string {
	var out []string
	for _, e := range listAt(v, keys...) {
		switch x := e.(type) {
		case string:
			out = append(out, x)
		default:
			out = append(out, fmt.Sprint(x))
		}
	}
	return out
}

// runsOf returns the raw runs of a load summarize result for one test and
// server (runs whose "test", else "mode", is test).
func runsOf(res map[string]any, test, server string) []map[string]any {
	var out []map[string]any
	for _, r := range listAt(res, "runs") {
		m, ok := r.(map[string]any)
		if !ok {
			continue
		}
		t, _ := m["test"].(string)
		if t == "" {
			t, _ = m["mode"].(string)
		}
		s, _ := m["server"].(string)
		if (test == "" || t == test) && (server == "" || s == server) {
			out = append(out, m)
		}
	}
	return out
}

// sumRuns adds a field over runs; missing when no run has it.
func sumRuns(runs []map[string]any, field string) val {
	var out val
	for _, r := range runs {
		if x := numAt(r, field); x.ok {
			out = some(out.v + x.v)
		}
	}
	return out
}

// numericFields returns the numeric fields of a flat or nested object as
// dotted names, sorted.
func numericFields(m map[string]any) []string {
	var out []string
	var walk func(prefix string, v map[string]any)
	walk = func(prefix string, v map[string]any) {
		for k, e := range v {
			switch x := e.(type) {
			case float64:
				out = append(out, prefix+k)
			case map[string]any:
				walk(prefix+k+".", x)
			}
		}
	}
	walk("", m)
	sort.Strings(out)
	return out
}
