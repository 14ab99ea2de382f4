package store

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// Record is one entry of the audit log.
type Record struct {
	Time time.Time // set by Append when zero
	Seq  uint64    // set by the store; with Time, the record's key
	Node string
	// Worker is the worker process that reported the record, -1 for the
	// agent itself (server API).
	Worker  int
	Conn    string // "" for the server API and refused handshakes
	User    string
	Op      string // see the Op constants
	Channel string // "" when the op has none (broadcast, auth, connect…)
	Data    []byte // JSON text, or opaque bytes when Opaque
	Opaque  bool
	// DataSize, when not 0, is the size of the data the op carried, of
	// which Data holds only the first Options.MaxData bytes (none for
	// OpRefused); DataHash is the SHA-256 of the whole. Set by Append.
	DataSize int
	DataHash [32]byte
	Attempt  string // OpRefused: the op that was refused
	Error    string // OpRefused: the protocol error code sent back
	Remote   string // OpConnect and refused handshakes: the peer address
	Code     int    // OpDisconnect: the WebSocket close code
	// OpConnect: the connection's scheme ("ws" or "wss") and, for wss,
	// its TLS version and cipher suite (crypto/tls's VersionName and
	// CipherSuiteName: "TLS 1.3", "TLS_AES_128_GCM_SHA256"); "" on other
	// records.
	Scheme, TLSVersion, TLSCipher string
}

// Audit ops. Publish, broadcast, subscribe, unsubscribe and auth are the
// protocol's ops; connect and disconnect are a session's ends; refused is
// any attempt the node turned down (Attempt says which).
const (
	OpPublish     = "publish"
	OpBroadcast   = "broadcast"
	OpSubscribe   = "subscribe"
	OpUnsubscribe = "unsubscribe"
	OpAuth        = "auth"
	OpConnect     = "connect"
	OpDisconnect  = "disconnect"
	OpRefused     = "refused"
)

// Session is one WebSocket connection's record.
type Session struct {
	Conn      string
	Node      string
	Worker    int
	User      string
	Remote    string
	UserAgent string
	Protocol  string
	// Scheme is "ws" or "wss"; for wss, TLSVersion and TLSCipher are the
	// TLS version and cipher suite (crypto/tls's VersionName and
	// CipherSuiteName: "TLS 1.3", "TLS_AES_128_GCM_SHA256"). All three are
	// "" in sessions recorded before ZenConn kept them.
	Scheme, TLSVersion, TLSCipher string
	Connected                     time.Time
	Disconnected                  time.Time // zero while active
	CloseCode                     int       // 0 while active; 1006 when the connection dropped without a close frame
	Channels                      []string  // every channel joined, in order of first join
	// First marks the session's first change (its opening), given when
	// nothing of it can be stored yet: if it is then written only once,
	// already closed (its changes merged while held, see sessionHold),
	// there is no active-session marker to delete, and none is. Not
	// stored; a session read back has it false.
	First bool
}

// Active reports whether the session is still open.
func (s *Session) Active() bool { return s.Disconnected.IsZero() }

// SyncMode says when the store fsyncs its write-ahead log.
type SyncMode uint8

// Sync modes; see the package doc.
const (
	SyncBatch SyncMode = iota
	SyncAlways
	SyncNone
)

// ParseSyncMode parses "always", "batch" or "none".
func ParseSyncMode(s string) (SyncMode, error) {
	switch s {
	case "batch":
		return SyncBatch, nil
	case "always":
		return SyncAlways, nil
	case "none":
		return SyncNone, nil
	}
	return 0, fmt.Errorf("store: sync mode %q is not always, batch or none", s)
}

func (m SyncMode) String() string {
	return [...]string{"batch", "always", "none"}[m]
}

// Options configures a Store. Zero values mean the defaults.
type Options struct {
	Sync SyncMode
	// SyncInterval is how often SyncBatch fsyncs, and how long the batch
	// and none modes hold a session's changes. Default 100 ms.
	SyncInterval time.Duration
	// Retention trims audit records and closed sessions older than this.
	// Zero keeps them for ever (Quota still applies).
	Retention time.Duration
	// MaxData is the bytes of a record's data kept whole; longer data
	// keeps its first MaxData bytes, its size and its SHA-256, and a
	// refused attempt's data keeps only its size and hash (see Record).
	// Default DefaultMaxData.
	MaxData int
	// Quota bounds the bytes of the folder's databases: past it the
	// oldest records are trimmed (see quota.go). At most half of the
	// filesystem is used whatever Quota says. Zero: half of the
	// filesystem.
	Quota int64
	// DiskReserve is the free space below which the writer stops
	// committing and waits (see space.go). Default the smaller of 64 MiB
	// and a twentieth of the filesystem.
	DiskReserve int64
	// QueueLimit is the number of records (and session updates) waiting
	// for the writer past which Append and PutSession block. Default 65536.
	QueueLimit int
	// MaxGroup caps the records of one commit. Default 8192.
	MaxGroup int
	// ReadOnly opens a stopped node's folder for queries only.
	ReadOnly bool
	// Registerer receives the store's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
	Log        *slog.Logger
}

// withDefaults returns o with its zero values replaced by the defaults.
func (o Options) withDefaults() Options {
	if o.SyncInterval <= 0 {
		o.SyncInterval = 100 * time.Millisecond
	}
	if o.QueueLimit <= 0 {
		o.QueueLimit = 65536
	}
	if o.MaxGroup <= 0 {
		o.MaxGroup = 8192
	}
	if o.MaxData <= 0 {
		o.MaxData = DefaultMaxData
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// ErrClosed is returned by writes after Close.
var ErrClosed = errors.New("store: closed")

// ErrLocked is returned by Open when another process holds the folder.
var ErrLocked = errors.New("store: the data folder is in use by a running node")

// Store is an open sessions-and-audit store: its log and index Pebble
// databases (see the package doc), the queue of what waits to be written
// and the goroutines that write it (writer, syncLoop, retainLoop).
type Store struct {
	db    *pebble.DB // index database
	logdb *pebble.DB // log database
	opts  Options
	log   *slog.Logger
	q     *queue // records and sessions on their way to the writer

	// writeMu orders the writer's commits and retention's
	// read-modify-write of sessions.
	writeMu sync.Mutex
	// dbMu: readers of the database hold it shared; Close takes it to
	// close the database, after which dbClosed makes them return ErrClosed.
	dbMu     sync.RWMutex
	dbClosed bool
	unsynced atomic.Bool  // committed without fsync since the last sync
	visited  atomic.Int64 // keys visited by queries (tests bound a page's)

	writerDone chan struct{} // closed when the writer returns
	syncDone   chan struct{} // closed when syncLoop returns
	stop       chan struct{} // closed by Close: retainLoop returns
	retainWG   sync.WaitGroup
	m          metrics

	dir       string
	quota     int64                      // the effective Options.Quota; 0 in read-only mode
	written   atomic.Int64               // bytes committed since quotaLoop was last woken
	quotaKick chan struct{}              // wakes quotaLoop
	cutLog    *limitLog                  // data cut to Options.MaxData
	fullLog   *limitLog                  // the writer paused on a full disk
	quotaLog  *limitLog                  // records trimmed for the quota
	marks     atomic.Pointer[[]stopMark] // the node's stops whose sessions are not all ended (stopmark.go)
	marksMu   sync.Mutex                 // serializes the changes of marks (updateStopMarks)
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	db, logdb, err := openDatabases(dir, opts)
	if err != nil {
		return nil, err
	}
	s := &Store{db: db, logdb: logdb, opts: opts, log: opts.Log, dir: dir,
		writerDone: make(chan struct{}), syncDone: make(chan struct{}), stop: make(chan struct{}),
		quotaKick: make(chan struct{}, 1),
		cutLog:    newLimitLog(opts.Log, "audit data cut to --audit-max-data (size, hash and prefix kept)", cutLogEvery),
		fullLog:   newLimitLog(opts.Log, "audit log paused: the disk is full; acks wait, and publishes are refused as overloaded once its queue is full", fullLogEvery),
		quotaLog:  newLimitLog(opts.Log, "audit quota reached: oldest records trimmed", quotaLogEvery)}
	s.m = newMetrics(s)
	s.q = newQueue(opts, s.m.blocked)
	w := &writer{s: s, space: diskSpace{dir: dir, reserve: opts.DiskReserve}}
	if w.space.reserve <= 0 {
		w.space.reserve = defaultReserve
		if _, total, err := statfs(dir); err == nil {
			w.space.reserve = min(defaultReserve, total/20)
		}
	}
	err = w.loadSeq()
	if err == nil {
		err = s.loadStopMarks()
	}
	if err == nil && !opts.ReadOnly {
		err = s.reindexTail()
	}
	if err != nil {
		_ = db.Close()
		_ = logdb.Close()
		return nil, err
	}
	if r := opts.Registerer; r != nil {
		r.MustRegister(s.m.collectors()...)
	}
	if opts.ReadOnly {
		close(s.writerDone)
		close(s.syncDone)
		return s, nil
	}
	go w.run()
	if opts.Sync == SyncBatch {
		go s.syncLoop()
	} else {
		close(s.syncDone)
	}
	if opts.Retention > 0 {
		s.retainWG.Add(1)
		go s.retainLoop()
	}
	if s.quota = s.effectiveQuota(dir); s.quota > 0 {
		s.retainWG.Add(1)
		go s.quotaLoop()
	}
	return s, nil
}

// Append queues r for the audit log; what is kept of r.Data (see
// Options.MaxData) is copied. It blocks while the queue is full. done, if not nil, is called from the writer goroutine once
// the record is committed as the sync mode promises (with SyncAlways: on
// disk), or with an error; it must not block.
func (s *Store) Append(r *Record, done func(error)) {
	p := pending{rec: *r, done: done}
	s.keepData(&p.rec, r.Data)
	if s.opts.ReadOnly || !s.q.push(&p) {
		if done != nil {
			done(ErrClosed)
		}
	}
}

// PutSession queues the new state of a session; updates of the same
// session not yet written are merged into one write. sess is copied.
func (s *Store) PutSession(sess *Session) {
	if !s.opts.ReadOnly {
		s.q.putSession(sess)
	}
}

// Barrier waits until everything queued before the call is committed and
// returns the writer's error, if any. Sessions held back (see the package
// doc) are written at once.
func (s *Store) Barrier() error {
	return s.q.barrier()
}

// DiskFull reports whether the writer is waiting for disk space: records
// appended now wait until space returns.
func (s *Store) DiskFull() bool { return s.m.paused.Load() }

// BarrierWithin is Barrier that gives up after d with ErrBehind, and at
// once with ErrDiskFull while the writer waits for disk space.
func (s *Store) BarrierWithin(d time.Duration) error {
	if s.m.paused.Load() {
		return ErrDiskFull
	}
	return s.q.barrierWithin(d)
}

// ErrBehind is BarrierWithin's error when the writer did not catch up in
// time.
var ErrBehind = errors.New("store: the writer is behind")

// Close commits what is queued, syncs and closes the database.
func (s *Store) Close() error {
	if !s.q.close() {
		return ErrClosed
	}
	close(s.stop)
	<-s.writerDone
	<-s.syncDone
	s.retainWG.Wait()
	if r := s.opts.Registerer; r != nil {
		for _, c := range s.m.collectors() {
			r.Unregister(c)
		}
	}
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	s.dbClosed = true
	return errors.Join(s.logdb.Close(), s.db.Close())
}

// reading takes the shared lock of a query; false (and no lock) once the
// store is closed.
func (s *Store) reading() bool {
	s.dbMu.RLock()
	if s.dbClosed {
		s.dbMu.RUnlock()
		return false
	}
	return true
}
