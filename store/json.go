package store

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"
)

// recordJSON is a Record in the server API.
type recordJSON struct {
	Time    string          `json:"time"`
	Seq     uint64          `json:"seq"`
	Node    string          `json:"node"`
	Worker  int             `json:"worker"`
	Conn    string          `json:"conn"`
	User    string          `json:"user"`
	Op      string          `json:"op"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	Enc     string          `json:"enc,omitempty"`
	Size    int             `json:"size,omitempty"`
	SHA256  string          `json:"sha256,omitempty"`
	Attempt string          `json:"attempt,omitempty"`
	Error   string          `json:"error,omitempty"`
	Remote  string          `json:"remote,omitempty"`
	Code    int             `json:"code,omitempty"`
	Scheme  string          `json:"scheme,omitempty"`
	TLSVer  string          `json:"tls_version,omitempty"`
	Cipher  string          `json:"tls_cipher,omitempty"`
}

// MarshalJSON renders the record as in GET /api/audit: data is the JSON
// that was published, or, for opaque bytes, their base64 text with
// "enc":"base64"; null when the op carries none. Data kept cut (see
// Record.DataSize) adds size and sha256 (hex), and data is its kept prefix
// as a string (base64 when opaque), or null when none was kept.
func (r Record) MarshalJSON() ([]byte, error) {
	j := recordJSON{
		Time: r.Time.UTC().Format(time.RFC3339Nano), Seq: r.Seq, Node: r.Node, Worker: r.Worker,
		Conn: r.Conn, User: r.User, Op: r.Op, Channel: r.Channel,
		Attempt: r.Attempt, Error: r.Error, Remote: r.Remote, Code: r.Code,
		Scheme: r.Scheme, TLSVer: r.TLSVersion, Cipher: r.TLSCipher,
	}
	if r.DataSize > 0 {
		j.Size, j.SHA256 = r.DataSize, hex.EncodeToString(r.DataHash[:])
	}
	switch {
	case r.DataSize > 0 && len(r.Data) == 0:
		j.Data = json.RawMessage("null")
	case r.Opaque:
		b, _ := json.Marshal(base64.StdEncoding.EncodeToString(r.Data))
		j.Data, j.Enc = b, "base64"
	case len(r.Data) > 0 && r.DataSize == 0 && json.Valid(r.Data):
		j.Data = r.Data
	case len(r.Data) > 0:
		b, _ := json.Marshal(string(r.Data))
		j.Data = b
	default:
		j.Data = json.RawMessage("null")
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (r *Record) UnmarshalJSON(b []byte) error {
	var j recordJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	t, err := time.Parse(time.RFC3339Nano, j.Time)
	if err != nil {
		return err
	}
	*r = Record{Time: t, Seq: j.Seq, Node: j.Node, Worker: j.Worker, Conn: j.Conn, User: j.User, Op: j.Op,
		Channel: j.Channel, Attempt: j.Attempt, Error: j.Error, Remote: j.Remote, Code: j.Code, DataSize: j.Size,
		Scheme: j.Scheme, TLSVersion: j.TLSVer, TLSCipher: j.Cipher}
	if j.SHA256 != "" {
		h, err := hex.DecodeString(j.SHA256)
		if err != nil || len(h) != len(r.DataHash) {
			return errors.New("store: sha256 is not 64 hex digits")
		}
		copy(r.DataHash[:], h)
	}
	switch {
	case j.Enc == "base64":
		var s string
		if err := json.Unmarshal(j.Data, &s); err != nil {
			return err
		}
		if r.Data, err = base64.StdEncoding.DecodeString(s); err != nil {
			return err
		}
		r.Opaque = true
	case r.DataSize > 0 && string(j.Data) != "null":
		var s string
		if err := json.Unmarshal(j.Data, &s); err != nil {
			return err
		}
		r.Data = []byte(s)
	case string(j.Data) != "null" && len(j.Data) > 0:
		r.Data = []byte(j.Data)
	}
	return nil
}

// sessionJSON is a Session in the server API.
type sessionJSON struct {
	Conn         string   `json:"conn"`
	Node         string   `json:"node"`
	Worker       int      `json:"worker"`
	User         string   `json:"user"`
	Remote       string   `json:"remote"`
	UserAgent    string   `json:"user_agent"`
	Protocol     string   `json:"protocol"`
	Scheme       string   `json:"scheme"`
	TLSVersion   string   `json:"tls_version"`
	TLSCipher    string   `json:"tls_cipher"`
	Connected    string   `json:"connected"`
	Disconnected *string  `json:"disconnected"`
	CloseCode    *int     `json:"close_code"`
	Active       bool     `json:"active"`
	Channels     []string `json:"channels"`
}

// MarshalJSON renders the session as in GET /api/sessions; disconnected
// and close_code are null while it is active.
func (s Session) MarshalJSON() ([]byte, error) {
	j := sessionJSON{Conn: s.Conn, Node: s.Node, Worker: s.Worker, User: s.User, Remote: s.Remote,
		UserAgent: s.UserAgent, Protocol: s.Protocol, Scheme: s.Scheme, TLSVersion: s.TLSVersion, TLSCipher: s.TLSCipher,
		Connected: s.Connected.UTC().Format(time.RFC3339Nano),
		Active:    s.Active(), Channels: s.Channels}
	if j.Channels == nil {
		j.Channels = []string{}
	}
	if !s.Active() {
		d := s.Disconnected.UTC().Format(time.RFC3339Nano)
		c := s.CloseCode
		j.Disconnected, j.CloseCode = &d, &c
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (s *Session) UnmarshalJSON(b []byte) error {
	var j sessionJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	t, err := time.Parse(time.RFC3339Nano, j.Connected)
	if err != nil {
		return err
	}
	*s = Session{Conn: j.Conn, Node: j.Node, Worker: j.Worker, User: j.User, Remote: j.Remote,
		UserAgent: j.UserAgent, Protocol: j.Protocol, Scheme: j.Scheme, TLSVersion: j.TLSVersion, TLSCipher: j.TLSCipher,
		Connected: t, Channels: j.Channels}
	if j.Disconnected != nil {
		if s.Disconnected, err = time.Parse(time.RFC3339Nano, *j.Disconnected); err != nil {
			return err
		}
	}
	if j.CloseCode != nil {
		s.CloseCode = *j.CloseCode
	}
	return nil
}
