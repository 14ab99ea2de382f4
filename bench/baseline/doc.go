// Command baseline is the reference server for ZenConn's benchmarks: the
// classic gorilla/websocket design, one reader goroutine per connection plus
// one writer goroutine fed by a buffered channel, speaking the subset of
// ZenConn's JSON protocol that the load generator uses (welcome, subscribe,
// unsubscribe, publish, ping).
//
// It is meant to be a fair, idiomatic baseline: messages are encoded once per
// publish (websocket.PreparedMessage) and the same frame is handed to every
// subscriber; a subscriber whose queue is full is disconnected, as in the
// gorilla chat example.
//
// For the churn benchmark it also serves /metrics (the Go runtime's and the
// process's standard Prometheus metrics, as ZenConn's /metrics has them) and
// /debug/pprof/heap (whose ?gc=1 forces a garbage collection first), so that
// heap and goroutines can be compared before and after a run.
//
// Everything is in main.go: the HTTP server and its upgrade, a
// connection's reader and writer goroutines, the channel map (hub) and
// the metrics and pprof endpoints. The JSON shapes it shares with
// bench/floor are in bench/internal/wire.
package main
