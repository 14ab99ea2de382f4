package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/zenconn/server/accesslog"
	"golang.org/x/sys/unix"
)

// The checks "zenconn serve" makes before it serves anything. Every
// configuration error, in every mode (--workers 0 or worker processes),
// ends the start at once with one style: `zenconn <command>: <problem>`
// on stderr, naming the flag, and exit status exitUsage.

// exitUsage is the exit status of a command-line or configuration error.
const exitUsage = 2

// usageError prints err in the commands' one style and returns exitUsage.
// An error joining several problems prints one line per problem.
func usageError(stderr io.Writer, cmd string, err error) int {
	for _, line := range strings.Split(strings.TrimSpace(err.Error()), "\n") {
		fmt.Fprintf(stderr, "zenconn %s: %s\n", cmd, line)
	}
	return exitUsage
}

// startError is an error that stopped the node before it served: it is
// reported like a flag error (usageError), not as a log line.
type startError struct{ err error }

func (e startError) Error() string { return e.err.Error() }
func (e startError) Unwrap() error { return e.err }

// publicOff is the --public value that serves no static files.
const publicOff = "off"

// noStatic reports whether --public asks for no static files ("off" or
// empty).
func noStatic(public string) bool { return public == publicOff || public == "" }

// checkPublic makes sure --public is a folder this process can list,
// unless it is off.
func checkPublic(public string) error {
	if noStatic(public) {
		return nil
	}
	hint := fmt.Sprintf(" (--public %s serves no static files)", publicOff)
	fi, err := os.Stat(public)
	if err != nil {
		return fmt.Errorf("--public: %w%s", err, hint)
	}
	if !fi.IsDir() {
		return fmt.Errorf("--public: %s is not a folder%s", public, hint)
	}
	d, err := os.Open(public)
	if err == nil {
		_, err = d.Readdirnames(1)
		_ = d.Close()
		if errors.Is(err, io.EOF) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("--public: %w%s", err, hint)
	}
	return nil
}

// checkAccessLog opens --access-log once (creating it, mode 0600) and
// closes it, so that a path that cannot be opened stops the start here
// rather than in every worker.
func checkAccessLog(path string) error {
	if path == "off" || path == "-" {
		return nil
	}
	w, err := accesslog.Open(path)
	if err != nil {
		return fmt.Errorf("--access-log: %w", err)
	}
	return w.Close()
}

// Files and folders that ZenConn creates hold client data (payloads,
// users, addresses, tokens' subjects): they are made for the node's user
// alone. dirMode and fileMode are the modes it asks for; restrictFiles
// makes the process umask at least 077 so that files created by the
// libraries (Pebble, the compressed-file cache) get the same.
const (
	dirMode  = 0o700
	fileMode = 0o600
)

// restrictFiles adds 077 to the process umask (the workers inherit it).
func restrictFiles() {
	old := syscall.Umask(0o077)
	syscall.Umask(old | 0o077)
}

// lockName is the lock file in the data folder, held by the node's
// agent whatever --audit says.
const lockName = "lock"

// claimData creates the data folder (mode 0700) and takes its lock; the
// returned function releases it. A folder locked by a running node is an
// error: two nodes on one folder would remove each other's agent socket.
func claimData(dir string) (release func(), err error) {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("--data: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return nil, fmt.Errorf("--data: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("--data: %s is in use by another running node", dir)
		}
		return nil, fmt.Errorf("--data: locking %s: %w", dir, err)
	}
	return func() { _ = f.Close() }, nil
}

// Secrets given as flags do not reach the workers' command lines (which
// any local user can read in /proc/PID/cmdline): the agent strips them
// from the workers' arguments and passes them in the workers'
// environment (readable by the node's user only), which a worker clears
// once it has read it.
var secretFlags = []string{"api-key", "jwt-secret", "nats-password", "nats-token"}

// envName is the environment variable of a flag: ZENCONN_<FLAG>.
func envName(flag string) string {
	return "ZENCONN_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// withoutSecrets returns args without the secret flags and their values.
func withoutSecrets(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || !isSecretFlag(name) {
			out = append(out, a)
			continue
		}
		if !hasValue {
			i++ // the value is the next argument
		}
	}
	return out
}

func isSecretFlag(name string) bool {
	for _, s := range secretFlags {
		if name == s {
			return true
		}
	}
	return false
}

// workerEnv is the agent's environment plus the secrets set by flag, for
// the workers.
func workerEnv(o *serveOptions) []string {
	env := os.Environ()
	for name, v := range map[string]string{"api-key": o.apiKey, "jwt-secret": o.jwtSecret} {
		if v != "" {
			env = append(env, envName(name)+"="+v)
		}
	}
	return env
}

// clearSecretEnv removes the secrets' variables from this process's
// environment once the flags have been read.
func clearSecretEnv() {
	for _, name := range secretFlags {
		_ = os.Unsetenv(envName(name))
	}
}

// parseFlags parses a subcommand's flags in the commands' one style:
// --help prints the flags on stdout (status 0), a bad flag or a stray
// argument is a usage error. ok is false when the command ends here with
// code.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprintf(stdout, "Usage: zenconn %s [flags]\n\n", fs.Name())
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return 0, false
	case err != nil:
		return usageError(stderr, fs.Name(), fmt.Errorf("%v (see zenconn %s --help)", err, fs.Name())), false
	case fs.NArg() > 0:
		return usageError(stderr, fs.Name(), fmt.Errorf("unexpected argument %q", fs.Arg(0))), false
	}
	return 0, true
}
