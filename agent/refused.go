package agent

import (
	"net/http"
	"strconv"
	"time"

	"github.com/zenconn/server/internal/keyguard"
	"github.com/zenconn/server/store"
)

// ExitConfig is the exit status of a worker process that could not start
// with its configuration (a flag value refused, its port taken): the
// agent does not restart it, it stops the node with that error instead
// (EX_CONFIG of sysexits.h).
const ExitConfig = 78

// The failed API-key attempts of the whole node: workers ask the agent
// whether an address is refused before they check a key, and tell it each
// failure, which it counts (keyguard) and audits. These endpoints are the
// workers' own: workers proxy only /api/ from clients.

// apiBlocked answers GET /internal/blocked?addr=IP with the milliseconds
// the address stays refused (0: it is not).
func (a *Agent) apiBlocked(w http.ResponseWriter, r *http.Request) {
	left := a.keys.Blocked(keyguard.Addr(r.URL.Query().Get("addr")), time.Now())
	_, _ = w.Write(strconv.AppendInt(nil, left.Milliseconds(), 10))
}

// apiRefused counts and audits a request a worker refused for a missing
// or wrong API key: POST /internal/refused?worker=W&remote=ADDR.
func (a *Agent) apiRefused(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	worker, err := strconv.Atoi(q.Get("worker"))
	if err != nil {
		worker = -1
	}
	now := time.Now()
	addr := keyguard.Addr(q.Get("remote"))
	if a.keys.Fail(addr, now) && a.keys.ShouldLog(now) {
		a.log.Warn("too many failed API-key attempts; address refused with 429 on every worker", "remote", addr.String(),
			"failures", keyguard.MaxFailures, "window", keyguard.Window)
	}
	if a.st != nil {
		a.audit(&store.Record{Worker: worker, Op: store.OpRefused, Attempt: "api", Error: "unauthorized",
			Remote: q.Get("remote")}, nil)
	}
	w.WriteHeader(http.StatusNoContent)
}
