package cluster

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// The API between agents: a request on P.node.<id>.api carries the
// method and URL in headers and the body as data; the answer carries the
// status in a header and the body as data. Only the endpoints a cluster
// query or a disconnect needs are served.

// apiPaths are the endpoints another node may call.
var apiPaths = map[string]string{
	"/api/connections": "GET", "/api/channels": "GET", "/api/sessions": "GET", "/api/audit": "GET",
	"/api/disconnect": "POST",
}

// maxServing bounds the requests of other nodes answered at once; past
// it they get 503.
const maxServing = 8

// AskTimeout bounds a request to another node.
const AskTimeout = 5 * time.Second

// methodSync asks a node for an empty answer (syncPeers).
const methodSync = "SYNC"

// syncTimeout bounds syncPeers: a peer that does not answer by then is
// down or cut off, and waiting longer would not help it.
const syncTimeout = time.Second

// syncPeers returns once every peer up has answered an empty request, or
// after syncTimeout. When this node's NATS server is part of a NATS
// cluster, a new subscription reaches the other servers over their
// routes, after the flush that confirmed it here; a request to a peer
// travels the same route after it, so the peer's answer proves that its
// server routes the channel's messages here. With one NATS server there
// is nothing to wait for.
func (c *Cluster) syncPeers() {
	if c.nc.ConnectedClusterName() == "" && len(c.nc.DiscoveredServers()) == 0 && len(c.nc.Servers()) < 2 {
		return // one NATS server
	}
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	c.AskAll(ctx, methodSync, "/")
}

type apiServer struct {
	h    http.Handler
	log  *slog.Logger
	sema chan struct{}
}

func newAPIServer(h http.Handler, log *slog.Logger) *apiServer {
	return &apiServer{h: h, log: log, sema: make(chan struct{}, maxServing)}
}

// serve answers one request, in its own goroutine so that a slow query
// holds back no other.
func (s *apiServer) serve(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	if m.Header.Get("Method") == methodSync {
		respond(m, http.StatusNoContent, nil)
		return
	}
	select {
	case s.sema <- struct{}{}:
	default:
		respond(m, http.StatusServiceUnavailable, []byte(`{"error":"the node answers too many cluster requests; retry"}`))
		return
	}
	go func() {
		defer func() { <-s.sema }()
		status, body := s.handle(m)
		respond(m, status, body)
	}()
}

func (s *apiServer) handle(m *nats.Msg) (int, []byte) {
	method, url := m.Header.Get("Method"), m.Header.Get("Url")
	path, _, _ := strings.Cut(url, "?")
	if want, ok := apiPaths[path]; !ok || want != method {
		return http.StatusNotFound, []byte(`{"error":"not served to other nodes"}`)
	}
	ctx, cancel := context.WithTimeout(context.Background(), AskTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(m.Data))
	if err != nil {
		return http.StatusBadRequest, []byte(`{"error":"bad request"}`)
	}
	return Record(s.h, req)
}

func respond(m *nats.Msg, status int, body []byte) {
	r := &nats.Msg{Header: nats.Header{"Status": {strconv.Itoa(status)}}, Data: body}
	if err := m.RespondMsg(r); errors.Is(err, nats.ErrMaxPayload) {
		r.Header.Set("Status", strconv.Itoa(http.StatusInsufficientStorage))
		r.Data = []byte(`{"error":"the answer is larger than NATS carries; ask for fewer (limit)"}`)
		_ = m.RespondMsg(r)
	}
}

// recorder is an http.ResponseWriter in memory.
type recorder struct {
	status int
	header http.Header
	body   bytes.Buffer
	wrote  bool
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.body.Write(b)
}

// Answer is another node's answer to a request.
type Answer struct {
	Node   string
	Status int
	Body   []byte
	Err    error // no answer (the node is down, or too slow)
}

// Ask sends a request to node and waits for its answer.
func (c *Cluster) Ask(ctx context.Context, node, method, url string, body []byte) Answer {
	ctx, cancel := context.WithTimeout(ctx, AskTimeout)
	defer cancel()
	req := &nats.Msg{Subject: c.apiSubject(node), Header: nats.Header{"Method": {method}, "Url": {url}}, Data: body}
	resp, err := c.nc.RequestMsgWithContext(ctx, req)
	if err != nil {
		return Answer{Node: node, Err: err}
	}
	status, err := strconv.Atoi(resp.Header.Get("Status"))
	if err != nil {
		return Answer{Node: node, Err: errors.New("answer without a status")}
	}
	return Answer{Node: node, Status: status, Body: resp.Data}
}

// AskAll sends a request to every peer up, at once, and returns their
// answers (in the order of Up).
func (c *Cluster) AskAll(ctx context.Context, method, url string) []Answer {
	ids := c.Up()
	out := make([]Answer, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() { defer wg.Done(); out[i] = c.Ask(ctx, id, method, url, nil) }()
	}
	wg.Wait()
	return out
}

// Record runs h on r in memory and returns the status and body it wrote.
func Record(h http.Handler, r *http.Request) (int, []byte) {
	rec := &recorder{status: http.StatusOK, header: http.Header{}}
	h.ServeHTTP(rec, r)
	return rec.status, rec.body.Bytes()
}
