// Package link owns the shared-memory rings between a node's agent and one
// of its workers, and the order in which they travel as file descriptors.
//
// A worker with L event loops has L+2 rings (package shm), each a single-
// producer, single-consumer queue of nodemsg records:
//
//	ring     producer                   consumer
//	0..L-1   event loop i of the worker the agent
//	L        the worker's housekeeping  the agent     (Ready, Stats)
//	L+1      the agent                  the worker
//
// The agent creates them (Create) and starts the worker with Files as
// exec.Cmd.ExtraFiles; the worker maps them again from the descriptors it
// inherited (Attach). Each ring is three descriptors, in ring order, from
// descriptor 3 (the first of ExtraFiles) on:
//
//	descriptor   3+3i     4+3i            5+3i
//	ring i       memfd    data eventfd    space eventfd
//
//	fd     3 4 5      6 7 8                3+3L           3+3(L+1)
//	    ┌──────────┬──────────┬─────┬────────────────┬────────────────┐
//	    │  ring 0  │  ring 1  │  …  │     ring L     │    ring L+1    │
//	    │  loop 0  │  loop 1  │     │  housekeeping  │  agent→worker  │
//	    └──────────┴──────────┴─────┴────────────────┴────────────────┘
//
// The worker learns L from its --loops flag, so both sides agree on the
// layout without exchanging it. The accessors of a Rings are safe for
// concurrent use; each ring has one producer and one consumer, each owned
// by one goroutine (see shm); Close comes after all of them have stopped.
package link
