// Package kvflag is the repeatable key=value command-line flag of the
// bench tools (load's and static's --meta, report's --env).
package kvflag

import (
	"fmt"
	"strings"
)

// Map collects the pairs of a repeated key=value flag (flag.Value); a key
// given twice keeps its last value. Not safe for concurrent use.
type Map map[string]string

func (m Map) String() string { return "" }

// Set adds one key=value pair.
func (m Map) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("want key=value, got %q", s)
	}
	m[k] = v
	return nil
}
