// Package cluster joins a node's agent to the other nodes of a ZenConn
// cluster through NATS. Only the agent speaks to NATS; workers never see
// it. Nothing of the transport is ZenConn's own: subjects, interest
// routing, buffering during an outage and reconnection are NATS's (the
// official client, github.com/nats-io/nats.go, and, with "embedded", its
// server, github.com/nats-io/nats-server/v2, running in the agent).
//
// # Subjects
//
// P is the cluster name (--cluster-name, "zenconn" by default), so that
// several clusters can share one NATS.
//
//	P.msg.<channel>          a message published on a channel; payload: a
//	                         nodemsg Deliver record (channel, from, flags, data)
//	P.bcast                  a broadcast; the same payload with channel ""
//	P.event.<node>.<kind>    kind: connect, disconnect, subscribe, unsubscribe;
//	                         JSON (see Event)
//	P.node.beat              each node's heartbeat, every second; JSON (see Beat)
//	P.node.<node>.api        API requests between agents (cluster queries,
//	                         disconnects); header Method and Url, body as in
//	                         HTTP; the answer has header Status
//
// A channel name becomes a subject token with every byte outside
// [A-Za-z0-9_:@-] written %XX (uppercase hex): "room.1" is "room%2E1".
// Channel names never contain '%', so no two channels share a token.
//
// # Who owns what
//
// A Cluster is one NATS connection (with NoEcho: a node never receives its
// own publications, it has delivered them locally already) and three
// goroutines: the reader of channel messages and broadcasts (one Go
// channel shared by every channel subscription, so that a subscription
// costs no goroutine), the interest reconciler (interest.go) and the
// heartbeat ticker (nodes.go). The host (the agent) tells it which
// channels have local subscribers (Want), asks when a channel's interest
// is live (Live), hands it every local publish (Publish) and event (Emit),
// and gets the messages of other nodes through Host.Deliver.
//
// # Faults
//
// NATS unreachable at start: Start succeeds, the node serves locally and
// the client retries for ever. While NATS is away, outgoing messages and
// events wait in the client's reconnect buffer (--nats-buffer bytes); past
// it they are dropped, counted (Stats.Dropped, reason buffer_full) and
// logged. Messages that arrive faster than the reader takes them are
// dropped by the client as a slow consumer, counted the same way (reason
// slow_consumer). On reconnection the client subscribes again to every
// subject: interest is re-established. A peer whose heartbeat has not
// come for DownAfter is shown as down.
package cluster
