package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/zenconn/server/nodemsg"
)

// checkPprofAddr accepts only a loopback host:port for --pprof: the
// profiles reveal memory contents and must not face the network.
func checkPprofAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--pprof: %w", err)
	}
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return errors.New("--pprof: the address must be on loopback (127.0.0.1:PORT, [::1]:PORT or localhost:PORT)")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > maxPprofPort {
		return fmt.Errorf("--pprof: the port must be 1-%d (worker i listens on port+1+i)", maxPprofPort)
	}
	return nil
}

// maxPprofPort is the highest --pprof port: the last worker's is above it
// by nodemsg.MaxWorkers.
const maxPprofPort = 65535 - nodemsg.MaxWorkers - 1

// pprofAddrFor returns the --pprof address of worker id: the port after
// the agent's, plus id.
func pprofAddrFor(addr string, id int) string {
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	return net.JoinHostPort(host, strconv.Itoa(p+1+id))
}

// servePprof serves net/http/pprof on addr until the process exits; it
// returns once listening, or with the error.
func servePprof(addr string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("pprof listening", "addr", ln.Addr().String())
	return nil
}
