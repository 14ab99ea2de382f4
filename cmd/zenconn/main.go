// Command zenconn is the ZenConn server: one binary whose subcommands are
// its roles.
package main

import (
	"fmt"
	"os"
)

const usage = `zenconn: a real-time edge server (WebSocket pub/sub and static files)

Usage:
  zenconn serve [flags]   serve public/ and WebSocket clients (zenconn serve --help)
  zenconn token [flags]   print a signed client token (zenconn token --help)
  zenconn status [flags]  print a running node's workers (--url, --api-key)
  zenconn audit [flags]   print audit records as JSON lines, from a running node
                          (--url, --api-key) or a stopped node's --data folder
  zenconn sessions [flags]
                          print sessions the same way
  zenconn connections [flags]
                          print a running node's connections as JSON lines, a
                          page at a time (--url, --api-key, --all)
  zenconn channels [flags]
                          print its channels with their subscribers the same way
  zenconn healthcheck [--url http://127.0.0.1:8080/healthz]
                          exit 0 if the node answers 200 there (a container's
                          health check)
  zenconn version         print the version and commit
  zenconn help            show this help

Every flag can also be set from the environment as ZENCONN_<FLAG>, with
dashes as underscores: --max-message is ZENCONN_MAX_MESSAGE.
`

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:])
	case "token":
		return token(args[1:], os.Stdout, os.Stderr)
	case "status":
		return status(args[1:], os.Stdout, os.Stderr)
	case "audit":
		return auditCmd(args[1:], os.Stdout, os.Stderr)
	case "sessions":
		return sessionsCmd(args[1:], os.Stdout, os.Stderr)
	case "connections", "channels":
		return listCmd(args[0], args[1:], os.Stdout, os.Stderr)
	case "healthcheck":
		return healthcheck(args[1:], os.Stdout, os.Stderr)
	case "version", "--version":
		return versionCmd(args[1:], os.Stdout, os.Stderr)
	case "worker": // started by the agent, not documented
		return workerMain(args[1:])
	case "help", "-h", "--help", "-help":
		fmt.Print(usage)
		fmt.Println()
		printServeFlags(os.Stdout)
		return 0
	default:
		fmt.Fprintf(os.Stderr, "zenconn: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
