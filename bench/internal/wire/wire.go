// Package wire holds the JSON message shapes that the bench servers
// (baseline and floor) speak: the subset of ZenConn's protocol v1 that the
// load generator uses.
package wire

import "encoding/json"

// Inbound is a client request.
type Inbound struct {
	ID      *int64          `json:"id,omitempty"`
	Op      string          `json:"op"`
	Channel string          `json:"channel,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// Ack answers a request with an id.
type Ack struct {
	Op string `json:"op"`
	ID *int64 `json:"id,omitempty"`
}

// Error answers a bad request.
type Error struct {
	Op      string `json:"op"`
	ID      *int64 `json:"id,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Welcome is the first message on a connection.
type Welcome struct {
	Op    string `json:"op"`
	Conn  string `json:"conn"`
	Node  string `json:"node"`
	Proto string `json:"proto"`
}

// Message is a delivery to a subscriber.
type Message struct {
	Op      string          `json:"op"`
	Channel string          `json:"channel"`
	From    string          `json:"from"`
	Data    json.RawMessage `json:"data"`
}
