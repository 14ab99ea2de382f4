package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version and commit are stamped by the build:
//
//	go build -ldflags "-X main.version=v1.2.3 -X main.commit=abc1234" ./cmd/zenconn
//
// Left empty, versionInfo takes them from the build information Go
// records in the binary (the module version, the VCS revision).
var version, commit string

// versionInfo returns the version and commit of this binary: the stamped
// values, else those of the build information, else "devel" and
// "unknown".
func versionInfo() (v, c string) {
	v, c = version, commit
	info, ok := debug.ReadBuildInfo()
	if ok && v == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		v = info.Main.Version
	}
	if ok && c == "" {
		modified := false
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				c = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if c != "" && modified {
			c += "-dirty"
		}
	}
	if v == "" {
		v = "devel"
	}
	if c == "" {
		c = "unknown"
	}
	return v, c
}

// versionCmd is "zenconn version": the version, the commit and the Go
// release it was built with, on one line.
func versionCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		return usageError(stderr, "version", fmt.Errorf("unexpected argument %q", args[0]))
	}
	v, c := versionInfo()
	fmt.Fprintf(stdout, "zenconn %s (commit %s, %s, %s/%s)\n", v, c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return 0
}
