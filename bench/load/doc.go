// Command load is ZenConn's WebSocket load generator. Modes:
//
//	load idle     --url ws://127.0.0.1:8090/ws --conns 15000 --server-pid PID
//	load fanout   --url ... --subs 5000 --size 64 --rate 0 --duration 10s --server-pid PID
//	load publish  --url ... --pubs 8 --size 64 --window 64 --duration 10s --server-pid PID
//	load churn    --url ... --conns 64 --duration 10s --server-pid PID [--metrics-url URL] [--gc-url URL]
//	load hold     --url ... --conns 60000 --server-pids P1,P2 [--jwt-secret S]   < commands
//	load summarize [--targets idle|fanout|audit] [--meta k=v ...] FILE...
//	load summarize-churn [--min-ratio 2] [--competitor centrifugo] [--max-cpu-ratio 0.5] [--meta k=v ...] FILE...
//
// idle, fanout, publish and churn print one JSON object on stdout; hold
// keeps its connections for a whole run and answers each command of its
// stdin (idle, kernel, fanout, broadcast, churn, mark, restart-wait) with
// one. summarize turns a file of such objects (JSON lines) into medians per test
// and server (summarize-churn adds the churn targets). See bench/README.md
// for what each figure means.
//
// Who owns what:
//
//   - client.go: the epoll client that every mode drives. It owns the
//     sockets: non-blocking connect, the upgrade, writes and their
//     backlog, reads, frame parsing, pings and fragmented messages. A
//     mode's connection type embeds a wsConn, and the mode receives its
//     connections' events through a handler (onUpgrade, onMessage, ...).
//   - frame.go: the server frame decoder; hist.go: the latency histogram.
//   - tlsbridge.go: wss:// connections, a socketpair bridged to crypto/tls
//     by two goroutines; tlscount.go: --tls-sample, subscribers detached
//     from their bridges once subscribed that count deliveries from the
//     sizes of the TLS records they receive, undecrypted.
//   - loop.go: the idle, fanout and publish modes on that client:
//     subscribers and publishers, the checks of every message, the
//     publish frames and the delivery latencies. worker.go: what one
//     worker of those modes does (connect, READY, publish at its pace,
//     RESULT).
//   - churn.go: the churn mode on the same client: the workers' cycles,
//     the observer, and what one churn worker does.
//   - hold.go: the hold mode's workers: the held connections, their
//     reconnection (backoff with full jitter), and the commands run over
//     them; hold_orchestrate.go: its orchestrator, which reads the
//     commands and samples the server and the kernel (kernel.go).
//   - crew.go: the orchestrator's side of the workers (a goroutine, or
//     child processes with --procs), the lines between them, the results.
//   - orchestrate.go and churn_orchestrate.go: the orchestrators, which
//     sample the server (RSS, CPU, descriptors, /metrics: metrics.go,
//     proc.go) around the measured phase and write the JSON object.
//   - summarize.go and churn_summary.go: load summarize and
//     summarize-churn, the medians and targets of many runs.
//
// One goroutine drives each client: nothing in it is safe for
// concurrent use.
package main
