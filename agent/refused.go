package agent

import (
	"net/http"
	"strconv"

	"github.com/zenconn/server/store"
)

// ExitConfig is the exit status of a worker process that could not start
// with its configuration (a flag value refused, its port taken): the
// agent does not restart it, it stops the node with that error instead
// (EX_CONFIG of sysexits.h).
const ExitConfig = 78

// apiRefused audits a request a worker refused for a missing or wrong API
// key: POST /internal/refused?worker=W&remote=ADDR, from the worker's
// engine (never proxied from clients: workers proxy /api/ only).
func (a *Agent) apiRefused(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	worker, err := strconv.Atoi(q.Get("worker"))
	if err != nil {
		worker = -1
	}
	if a.st != nil {
		a.audit(&store.Record{Worker: worker, Op: store.OpRefused, Attempt: "api", Error: "unauthorized",
			Remote: q.Get("remote")}, nil)
	}
	w.WriteHeader(http.StatusNoContent)
}
