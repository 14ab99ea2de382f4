// Package agent supervises a node's worker processes and is the node's
// single point of truth: it keeps the connection table and the channel →
// workers interest map from the workers' records, forwards each published
// message only to the workers that have subscribers of its channel (every
// other worker for a broadcast), hands sessions and audit records to the
// store, and answers the server API for the whole node over a unix socket
// that the workers proxy to.
//
// The agent does not import the engine: it speaks to workers only through
// shared-memory rings (package shm, laid out by package link) carrying
// nodemsg records.
//
// # Parts
//
//   - Supervision (supervise.go): spawn a worker with its rings, read its
//     rings, restart it with backoff when it exits, drain it on shutdown.
//   - The table (table.go): connections and channel → worker interest as
//     plain data, guarded by Agent.mu.
//   - Reading (reader.go): a goroutine per ring from a worker decodes its
//     records and dispatches each kind to a small handler that updates the
//     table, routes and audits.
//   - Routing (route.go): who gets a published message, a kick, a Done
//     answer; every record to a worker goes through that worker's outbox
//     (outbox.go), so no caller ever waits on a worker's ring.
//   - The audit hand-off (audit.go): sessions and records to the store,
//     and the answers to durable publishes and subscriptions once the
//     store has committed them.
//   - The server API (api.go, query.go, metrics.go), read from the table
//     and the store, and the workers' own endpoints for failed API keys
//     (refused.go): the agent counts them for the whole node and audits
//     them.
//   - Limits (limits.go): connections per user on the whole node; a
//     connection past it is evicted (4009) through its worker.
//   - Session tickets (tickets.go): the node's TLS session-ticket keys.
//
// # Supervision policy
//
// The policy lives in fields of Config. A worker that exits is restarted
// after a backoff that starts at MinBackoff and doubles up to MaxBackoff,
// reset once a worker has stayed up for StableAfter (but a worker that
// exits with ExitConfig could not start with its configuration: it is not
// restarted, the agent stops with an error); its connections leave
// the table at once and their sessions end with 1006. On shutdown the
// workers get SIGTERM and ShutdownGrace to drain, then SIGKILL; the
// sessions that end meanwhile are recorded by one stop mark in the store
// (store.MarkStopped), not one by one. Workers die
// with the agent (PR_SET_PDEATHSIG).
//
// A worker that stays unable to take its records, because its outbox
// holds QueueBytes or its ring accepted nothing for StallTimeout, has
// failed: the agent logs it at error level with the reason, counts it in
// zenconn_node_worker_failures_total{reason}, kills it with SIGKILL and
// restarts it like a crashed worker. Nothing is ever dropped to keep a
// worker fed. The in-process worker (Config.InProcess) cannot be killed
// alone: its failure stops the agent, whose Run returns the error, so that
// the process exits non-zero and its own supervisor restarts the node.
//
// # Session tickets
//
// A TLS client resumes its session on whichever worker takes its next
// connection because every worker holds the same session-ticket keys, the
// agent's: it makes a random 32-byte key at start and a new one every
// TicketRotation (an hour), keeps the TicketKeys newest (25: a ticket
// opens for 24 rotations after the one that sealed it), and sends them
// all, newest first, in a nodemsg Tickets record to every running worker
// at each rotation. A worker process it starts, a restarted one included,
// gets the keys as the first record of its ring (queued before the
// process's outbox is published, under the keys' lock, so that a rotation
// reaches either that record or the outbox), and a TLS worker waits for
// them before it serves. The keys never leave the memory of the agent and
// its workers.
package agent
