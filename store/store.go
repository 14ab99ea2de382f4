package store

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
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
	Attempt string // OpRefused: the op that was refused
	Error   string // OpRefused: the protocol error code sent back
	Remote  string // OpConnect and refused handshakes: the peer address
	Code    int    // OpDisconnect: the WebSocket close code
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
	Conn         string
	Node         string
	Worker       int
	User         string
	Remote       string
	UserAgent    string
	Protocol     string
	Connected    time.Time
	Disconnected time.Time // zero while active
	CloseCode    int       // 0 while active; 1006 when the connection dropped without a close frame
	Channels     []string  // every channel joined, in order of first join
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
	// SyncInterval is how often SyncBatch fsyncs. Default 100 ms.
	SyncInterval time.Duration
	// Retention trims audit records and closed sessions older than this.
	// Zero keeps everything.
	Retention time.Duration
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

// ErrClosed is returned by writes after Close.
var ErrClosed = errors.New("store: closed")

// ErrLocked is returned by Open when another process holds the folder.
var ErrLocked = errors.New("store: the data folder is in use by a running node")

// Store is an open sessions-and-audit store: its log and index Pebble
// databases (see the package doc).
type Store struct {
	db    *pebble.DB // index database
	logdb *pebble.DB // log database
	opts  Options
	log   *slog.Logger

	mu        sync.Mutex
	wake      *sync.Cond // writer: work arrived or closing
	space     *sync.Cond // producers: room in the queue
	committed *sync.Cond // barriers: a group was committed
	queue     []pending
	sessions  map[string]*Session // latest state of sessions waiting to be written
	// formerUsers: users of a waiting session replaced by a merged update,
	// still to be indexed.
	formerUsers map[string][]string
	order       []string // sessions in order of first change
	orderAt     []int64  // when each of order was first changed (unix ns)
	hold        time.Duration
	holdTimer   *time.Timer // wakes the writer when the oldest held session is due
	barriers    int         // Barrier calls waiting: held sessions are written at once
	queued      uint64      // items ever queued (records + session updates)
	done        uint64      // items ever committed
	closing     bool
	waiting     int   // producers waiting for room in the queue
	werr        error // the writer's last error, reported by Barrier
	seq         uint64
	lastTime    int64
	retainWG    sync.WaitGroup
	// writeMu orders the writer's commits and retention's
	// read-modify-write of sessions.
	writeMu sync.Mutex
	// dbMu: readers of the database hold it shared; Close takes it to
	// close the database, after which dbClosed makes them return ErrClosed.
	dbMu     sync.RWMutex
	dbClosed bool

	unsynced   atomic.Bool // committed without fsync since the last sync
	writerDone chan struct{}
	syncDone   chan struct{}
	stop       chan struct{}
	m          metrics
}

type pending struct {
	rec  Record
	done func(error)
	at   time.Time
}

type metrics struct {
	lag        prometheus.GaugeFunc
	lagSeconds prometheus.GaugeFunc
	groups     prometheus.Histogram
	fsync      prometheus.Histogram
	records    prometheus.Counter
	blocked    prometheus.Counter
	trimmed    prometheus.Counter
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts Options) (*Store, error) {
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = 100 * time.Millisecond
	}
	if opts.QueueLimit <= 0 {
		opts.QueueLimit = 65536
	}
	if opts.MaxGroup <= 0 {
		opts.MaxGroup = 8192
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	// Pebble v2 has no CURRENT file: a marker names the manifest.
	if desc, err := pebble.Peek(dir, vfs.Default); err == nil && desc.Exists {
		return nil, fmt.Errorf("store: %s holds a store of an earlier layout (one database); move it away to start a new one", dir)
	}
	if opts.ReadOnly {
		for _, sub := range []string{"index", "log"} {
			if desc, err := pebble.Peek(filepath.Join(dir, sub), vfs.Default); err != nil || !desc.Exists {
				return nil, fmt.Errorf("store: no database in %s", dir)
			}
		}
	}
	db, err := openPebble(filepath.Join(dir, "index"), true, opts)
	if err != nil {
		return nil, err
	}
	logdb, err := openPebble(filepath.Join(dir, "log"), false, opts)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	s := &Store{db: db, logdb: logdb, opts: opts, log: opts.Log, sessions: map[string]*Session{}, formerUsers: map[string][]string{},
		writerDone: make(chan struct{}), syncDone: make(chan struct{}), stop: make(chan struct{})}
	s.wake = sync.NewCond(&s.mu)
	if opts.Sync != SyncAlways {
		s.hold = opts.SyncInterval
	}
	s.holdTimer = time.AfterFunc(time.Hour, func() {
		s.mu.Lock()
		s.wake.Signal()
		s.mu.Unlock()
	})
	s.holdTimer.Stop()
	s.space = sync.NewCond(&s.mu)
	s.committed = sync.NewCond(&s.mu)
	err = s.loadSeq()
	if err == nil && !opts.ReadOnly {
		err = s.reindexTail()
	}
	if err != nil {
		_ = db.Close()
		_ = logdb.Close()
		return nil, err
	}
	s.initMetrics()
	if opts.ReadOnly {
		close(s.writerDone)
		close(s.syncDone)
		return s, nil
	}
	go s.writer()
	if opts.Sync == SyncBatch {
		go s.syncLoop()
	} else {
		close(s.syncDone)
	}
	if opts.Retention > 0 {
		s.retainWG.Add(1)
		go s.retainLoop()
	}
	return s, nil
}

// maxOpenFiles bounds each database's open files (its table cache holds
// 10 fewer).
const maxOpenFiles = 128

// indexMemTable is the index database's largest memtable (Pebble starts
// at 256 KiB and doubles up to it; the log database keeps the default 4
// MiB).
const indexMemTable = 16 << 20

// openPebble opens (creating if needed) one of the store's databases.
func openPebble(dir string, index bool, opts Options) (*pebble.DB, error) {
	po := &pebble.Options{
		// An explicit FS: Pebble's default wraps it in a disk-health
		// checker whose goroutine a failed Open (folder locked) leaks, and
		// whose reports would go to a no-op listener anyway.
		FS:       vfs.Default,
		ReadOnly: opts.ReadOnly,
		Logger:   quietLogger{opts.Log},
		// Pebble keeps tables open in a cache of up to MaxOpenFiles (1,000
		// by default); the node accepts connections up to the open-file
		// limit less 512, so the two databases together must stay well
		// under that.
		MaxOpenFiles: maxOpenFiles,
	}
	// No compactions just for tombstone-dense tables: the index database's
	// active-session markers are set then deleted by the thousand, and
	// such compactions rewrote its bottom level over and over (58 MB in 8
	// s of churn against 36 MB without); normal compactions drop the
	// tombstones anyway.
	po.Experimental.TombstoneDenseCompactionThreshold = -1
	if index {
		// The index database's keys (channel and user indexes) do not
		// grow with time, so every flushed table overlaps the ones before
		// and L0 compactions rewrite them. A larger memtable and more L0
		// tables before a compaction rewrite each entry fewer times:
		// BenchmarkChurnCycle, and the churn scenario's profile, where
		// compactions went from 12% of the node's CPU to none in 5 s.
		po.MemTableSize = indexMemTable
		po.L0CompactionThreshold = 8
		po.L0StopWritesThreshold = 32
	}
	db, err := pebble.Open(dir, po)
	if err != nil {
		if isLockErr(err) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("store: opening %s: %w", dir, err)
	}
	return db, nil
}

func isLockErr(err error) bool {
	// Pebble reports a lock held by another Store of this process with a
	// plain error of its own.
	return errors.Is(err, syscall.EAGAIN) || strings.Contains(err.Error(), "resource temporarily unavailable") ||
		strings.Contains(err.Error(), "lock held by current process")
}

// loadSeq continues the record sequence after the last stored record.
func (s *Store) loadSeq() error {
	it, err := s.logdb.NewIter(&pebble.IterOptions{LowerBound: []byte{spaceAudit}, UpperBound: []byte{spaceAudit + 1}})
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer it.Close()
	if it.Last() && len(it.Key()) == 17 {
		k := it.Key()
		s.lastTime = int64(beU64(k[1:9]))
		s.seq = beU64(k[9:17])
	}
	return it.Error()
}

func (s *Store) initMetrics() {
	lag := func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(len(s.queue) + len(s.order))
	}
	lagSec := func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.queue) == 0 {
			return 0
		}
		return time.Since(s.queue[0].at).Seconds()
	}
	s.m = metrics{
		lag: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "zenconn_audit_lag_records",
			Help: "Audit records and session updates waiting for the writer."}, lag),
		lagSeconds: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "zenconn_audit_lag_seconds",
			Help: "Age of the oldest audit record waiting for the writer."}, lagSec),
		groups: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "zenconn_audit_batch_records",
			Help:    "Records and session updates per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8)}),
		fsync: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "zenconn_audit_fsync_seconds",
			Help:    "Latency of the commits that fsync the write-ahead log.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8)}),
		records: prometheus.NewCounter(prometheus.CounterOpts{Name: "zenconn_audit_records_total",
			Help: "Audit records committed."}),
		blocked: prometheus.NewCounter(prometheus.CounterOpts{Name: "zenconn_audit_backpressure_total",
			Help: "Times a writer of records waited because the audit queue was full."}),
		trimmed: prometheus.NewCounter(prometheus.CounterOpts{Name: "zenconn_audit_retention_runs_total",
			Help: "Retention passes that trimmed old records."}),
	}
	if r := s.opts.Registerer; r != nil {
		r.MustRegister(s.m.lag, s.m.lagSeconds, s.m.groups, s.m.fsync, s.m.records, s.m.blocked, s.m.trimmed)
	}
}

// Append queues r for the audit log; r.Data is copied. It blocks while the
// queue is full. done, if not nil, is called from the writer goroutine once
// the record is committed as the sync mode promises (with SyncAlways: on
// disk), or with an error; it must not block.
func (s *Store) Append(r *Record, done func(error)) {
	s.mu.Lock()
	if s.waitRoomLocked() {
		s.mu.Unlock()
		if done != nil {
			done(ErrClosed)
		}
		return
	}
	p := pending{rec: *r, done: done, at: time.Now()}
	if len(r.Data) > 0 {
		p.rec.Data = append([]byte(nil), r.Data...)
	}
	s.queue = append(s.queue, p)
	s.queued++
	s.wake.Signal()
	s.mu.Unlock()
}

// PutSession queues the new state of a session; updates of the same
// session not yet written are merged into one write. sess is copied.
func (s *Store) PutSession(sess *Session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur := s.sessions[sess.Conn]; cur != nil {
		if cur.User != "" && cur.User != sess.User {
			s.formerUsers[sess.Conn] = append(s.formerUsers[sess.Conn], cur.User)
		}
		*cur = *sess
		cur.Channels = slices.Clone(sess.Channels)
		return
	}
	if s.waitRoomLocked() {
		return
	}
	cp := *sess
	cp.Channels = slices.Clone(sess.Channels)
	s.sessions[sess.Conn] = &cp
	s.order = append(s.order, sess.Conn)
	s.orderAt = append(s.orderAt, time.Now().UnixNano())
	s.queued++
	s.wake.Signal()
}

// waitRoomLocked waits for room in the queue and reports whether the store
// is closing instead.
func (s *Store) waitRoomLocked() bool {
	if s.opts.ReadOnly {
		return true
	}
	counted := false
	for !s.closing && len(s.queue)+len(s.order) >= s.opts.QueueLimit {
		if !counted {
			s.m.blocked.Inc()
			counted = true
		}
		s.waiting++
		s.wake.Signal() // held sessions may be what fills it
		s.space.Wait()
		s.waiting--
	}
	return s.closing
}

// Barrier waits until everything queued before the call is committed and
// returns the writer's error, if any.
func (s *Store) Barrier() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	target := s.queued
	s.barriers++
	s.wake.Signal()
	for s.done < target && s.werr == nil && !(s.closing && s.writerExited()) {
		s.committed.Wait()
	}
	s.barriers--
	return s.werr
}

func (s *Store) writerExited() bool {
	select {
	case <-s.writerDone:
		return true
	default:
		return false
	}
}

// groupDelay is how long the writer lets a group grow in the batch and
// none sync modes; markerEvery is how often it records in the index
// database the last record indexed.
const (
	groupDelay  = time.Millisecond
	markerEvery = 100 * time.Millisecond
)

// sessionsDueLocked reports whether a waiting session is to be written
// now: one has waited hold since its first change, or allSessionsDueLocked.
func (s *Store) sessionsDueLocked() bool {
	if len(s.order) == 0 {
		return false
	}
	return s.allSessionsDueLocked() || time.Now().UnixNano()-s.orderAt[0] >= int64(s.hold)
}

// allSessionsDueLocked reports whether every waiting session is to be
// written with the next group: no hold (SyncAlways), a Barrier waits, a
// producer waits for room, or the store is closing.
func (s *Store) allSessionsDueLocked() bool {
	return s.hold == 0 || s.barriers > 0 || s.waiting > 0 || s.closing
}

// writer commits queued records and sessions in groups until Close. In
// the batch and none sync modes a session's changes are held for hold
// (the sync interval) after the first: a connection that opens,
// subscribes and closes within it costs one write of its session, and
// no active-session marker set then deleted.
func (s *Store) writer() {
	defer close(s.writerDone)
	var (
		key, val   []byte
		group      []pending
		sess       []*Session
		former     [][]string // former users of sess[i]
		lastMarker time.Time
		unmarked   []byte // key (without its space) of the last record committed after the marker
	)
	for {
		s.mu.Lock()
		for len(s.queue) == 0 && !s.closing && !s.sessionsDueLocked() {
			if len(s.order) > 0 {
				s.holdTimer.Reset(time.Duration(s.orderAt[0] + int64(s.hold) - time.Now().UnixNano()))
			}
			s.wake.Wait()
		}
		if s.opts.Sync != SyncAlways && !s.closing && s.waiting == 0 && len(s.queue)+len(s.order) < s.opts.MaxGroup {
			// Let the group grow for groupDelay: one commit for many
			// records, and a session opened and closed meanwhile is
			// written once. Nothing waits on it but queries (Barrier);
			// a full queue (producers waiting) is taken at once.
			s.mu.Unlock()
			time.Sleep(groupDelay)
			s.mu.Lock()
		}
		if s.closing && len(s.queue) == 0 && len(s.order) == 0 {
			s.mu.Unlock()
			if len(unmarked) > 0 {
				// A clean stop leaves the marker on the last record, so the
				// next Open has nothing to index again.
				s.writeMu.Lock()
				if err := s.db.Set(metaIndexed, unmarked, s.commitOpt()); err != nil {
					s.log.Error("audit index marker", "err", err)
				}
				s.writeMu.Unlock()
				s.unsynced.Store(true)
			}
			return
		}
		n := min(len(s.queue), s.opts.MaxGroup)
		if n == len(s.queue) {
			// The usual case: take the whole queue and give the writer's
			// emptied buffer back as the next queue (no allocation).
			group, s.queue = s.queue, group[:0]
		} else {
			group = append(group[:0], s.queue[:n]...)
			rest := copy(s.queue, s.queue[n:])
			clear(s.queue[rest:])
			s.queue = s.queue[:rest]
		}
		sess = sess[:0]
		former = former[:0]
		due := len(s.order)
		if !s.allSessionsDueLocked() {
			limit := time.Now().UnixNano() - int64(s.hold)
			due, _ = slices.BinarySearch(s.orderAt, limit+1)
		}
		for _, id := range s.order[:due] {
			sess = append(sess, s.sessions[id])
			former = append(former, s.formerUsers[id])
			delete(s.sessions, id)
			delete(s.formerUsers, id)
		}
		rest := copy(s.order, s.order[due:])
		clear(s.order[rest:])
		s.order = s.order[:rest]
		s.orderAt = s.orderAt[:copy(s.orderAt, s.orderAt[due:])]
		// Times and sequence numbers are given here so that keys grow with
		// the commit order.
		for i := range group {
			r := &group[i].rec
			ns := unixNano(r.Time)
			if ns == 0 {
				ns = group[i].at.UnixNano()
			}
			ns = max(ns, s.lastTime)
			s.lastTime = ns
			s.seq++
			r.Time, r.Seq = time.Unix(0, ns).UTC(), s.seq
		}
		s.space.Broadcast()
		s.mu.Unlock()

		s.writeMu.Lock()
		lb := s.logdb.NewBatch()
		b := s.db.NewBatch()
		for i := range group {
			r := &group[i].rec
			key = auditKey(key[:0], r.Time.UnixNano(), r.Seq)
			val = encodeRecord(val[:0], r)
			_ = lb.Set(key, val, nil)
			indexRecord(b, r, &key)
		}
		if n := len(group); n > 0 {
			// The marker every markerEvery rather than every group: one
			// behind the truth only makes Open index a few records again.
			r := &group[n-1].rec
			unmarked = append(unmarked[:0], auditKey(key[:0], r.Time.UnixNano(), r.Seq)[1:]...)
			if time.Since(lastMarker) >= markerEvery {
				_ = b.Set(metaIndexed, unmarked, nil)
				unmarked, lastMarker = unmarked[:0], time.Now()
			}
		}
		for i, se := range sess {
			s.writeSession(b, se, &key, &val)
			for _, u := range former[i] {
				key = sessionUserKey(key[:0], u, unixNano(se.Connected), se.Conn)
				_ = b.Set(key, nil, nil)
			}
		}
		start := time.Now()
		err := commitBoth(lb, b, s.commitOpt())
		s.writeMu.Unlock()
		if s.opts.Sync == SyncAlways {
			s.m.fsync.Observe(time.Since(start).Seconds())
		}
		if err != nil {
			s.log.Error("audit commit failed", "records", len(group), "err", err)
		}
		s.unsynced.Store(true)
		s.m.groups.Observe(float64(len(group) + len(sess)))
		s.m.records.Add(float64(len(group)))
		for i := range group {
			if d := group[i].done; d != nil {
				d(err)
			}
			group[i] = pending{}
		}
		s.mu.Lock()
		s.done += uint64(len(group) + len(sess))
		if err != nil {
			s.werr = err
		}
		s.committed.Broadcast()
		s.mu.Unlock()
	}
}

// syncLoop fsyncs the write-ahead log every SyncInterval when something
// was committed since the last sync (SyncBatch), and once more at Close.
func (s *Store) syncLoop() {
	defer close(s.syncDone)
	t := time.NewTicker(s.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if s.unsynced.Swap(false) {
				s.syncWAL()
			}
		case <-s.writerDone:
			if s.unsynced.Swap(false) {
				s.syncWAL()
			}
			return
		}
	}
}

func (s *Store) syncWAL() {
	start := time.Now()
	// The log first: an index ahead of its records only points at
	// records a query skips; records ahead of their index are indexed
	// again at the next Open.
	for _, db := range []*pebble.DB{s.logdb, s.db} {
		if err := db.LogData(nil, pebble.Sync); err != nil {
			s.log.Error("audit fsync failed", "err", err)
			return
		}
	}
	s.m.fsync.Observe(time.Since(start).Seconds())
}

// commitOpt is how commits are written: fsynced with SyncAlways, else
// left to syncLoop or the operating system.
func (s *Store) commitOpt() *pebble.WriteOptions {
	if s.opts.Sync == SyncAlways {
		return pebble.Sync
	}
	return pebble.NoSync
}

// commitBoth commits a group's batch of the log database and its batch of
// the index database, then closes them. With fsync the two commits run
// side by side, so the group waits for one fsync's time, not two.
func commitBoth(lb, b *pebble.Batch, opt *pebble.WriteOptions) error {
	defer lb.Close()
	defer b.Close()
	if opt != pebble.Sync {
		if err := lb.Commit(opt); err != nil {
			return err
		}
		return b.Commit(opt)
	}
	lerr := make(chan error, 1)
	go func() { lerr <- lb.Commit(opt) }()
	err := b.Commit(opt)
	return errors.Join(<-lerr, err)
}

// indexRecord adds r's index entries to b; key is scratch.
func indexRecord(b *pebble.Batch, r *Record, key *[]byte) {
	ns := r.Time.UnixNano()
	if r.Channel != "" {
		*key = indexKey((*key)[:0], spaceChanIndex, r.Channel, ns, r.Seq)
		_ = b.Set(*key, nil, nil)
	}
	if r.User != "" {
		*key = indexKey((*key)[:0], spaceUserIndex, r.User, ns, r.Seq)
		_ = b.Set(*key, nil, nil)
	}
}

// reindexTail indexes again the audit records after the last one the
// index database says it has: after a power loss the log database may
// have kept a few more records than the index database.
func (s *Store) reindexTail() error {
	from := []byte{spaceAudit}
	v, closer, err := s.db.Get(metaIndexed)
	switch {
	case err == nil:
		if len(v) == 16 {
			from = append(from, v...)
			from = append(from, 0) // just after that record
		}
		_ = closer.Close()
	case !errors.Is(err, pebble.ErrNotFound):
		return fmt.Errorf("store: %w", err)
	}
	b := s.db.NewBatch()
	defer b.Close()
	var key, last []byte
	var r Record
	n := 0
	err = s.scanRange(from, []byte{spaceAudit + 1}, func(k, v []byte) (bool, error) {
		if decodeRecord(k, v, &r) != nil {
			return false, nil
		}
		indexRecord(b, &r, &key)
		last = append(last[:0], k[1:]...)
		n++
		return false, nil
	})
	if err != nil || last == nil {
		return err
	}
	_ = b.Set(metaIndexed, last, nil)
	s.log.Info("audit records indexed again after an unclean stop", "records", n)
	return b.Commit(pebble.Sync)
}

// writeSession adds a session's keys to b.
func (s *Store) writeSession(b *pebble.Batch, se *Session, key, val *[]byte) {
	c := unixNano(se.Connected)
	*key = sessionKey((*key)[:0], spaceSession, c, se.Conn)
	*val = encodeSession((*val)[:0], se)
	_ = b.Set(*key, *val, nil)
	*key = sessionKey((*key)[:0], spaceActive, c, se.Conn)
	if se.Active() {
		_ = b.Set(*key, nil, nil)
	} else {
		_ = b.Delete(*key, nil)
	}
	if se.User != "" {
		*key = sessionUserKey((*key)[:0], se.User, c, se.Conn)
		_ = b.Set(*key, nil, nil)
	}
}

// CloseActive marks every session still recorded as active as ended at
// `at` with close code code, audits its disconnect (a record like the
// one a live session's end gets), and returns how many there were. The agent
// calls it at start: sessions left active belong to a previous run that
// did not stop cleanly.
func (s *Store) CloseActive(at time.Time, code int) (int, error) {
	s.mu.Lock()
	closed := s.closing || s.opts.ReadOnly
	s.mu.Unlock()
	if closed {
		return 0, ErrClosed
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{spaceActive}, UpperBound: []byte{spaceActive + 1}})
	if err != nil {
		return 0, err
	}
	var keys [][]byte
	for it.First(); it.Valid(); it.Next() {
		keys = append(keys, slices.Clone(it.Key()))
	}
	if err := it.Close(); err != nil {
		return 0, err
	}
	n := 0
	for _, k := range keys {
		sk := slices.Clone(k)
		sk[0] = spaceSession
		v, closer, err := s.db.Get(sk)
		if err != nil {
			continue
		}
		var se Session
		derr := decodeSession(v, &se)
		_ = closer.Close()
		if derr != nil {
			continue
		}
		se.Disconnected, se.CloseCode = at.UTC(), code
		s.PutSession(&se)
		s.Append(&Record{Time: at, Node: se.Node, Worker: se.Worker, Conn: se.Conn, User: se.User, Op: OpDisconnect, Code: code}, nil)
		n++
	}
	return n, s.Barrier()
}

// Close commits what is queued, syncs and closes the database.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closing = true
	s.holdTimer.Stop()
	s.wake.Broadcast()
	s.space.Broadcast()
	s.mu.Unlock()
	close(s.stop)
	<-s.writerDone
	<-s.syncDone
	s.retainWG.Wait()
	s.mu.Lock()
	s.committed.Broadcast()
	s.mu.Unlock()
	if r := s.opts.Registerer; r != nil {
		for _, c := range []prometheus.Collector{s.m.lag, s.m.lagSeconds, s.m.groups, s.m.fsync, s.m.records, s.m.blocked, s.m.trimmed} {
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

// quietLogger sends Pebble's informational chatter to debug level.
type quietLogger struct{ log *slog.Logger }

func (l quietLogger) Infof(format string, args ...any) {
	l.log.Debug("pebble: " + fmt.Sprintf(format, args...))
}
func (l quietLogger) Errorf(format string, args ...any) {
	l.log.Error("pebble: " + fmt.Sprintf(format, args...))
}
func (l quietLogger) Fatalf(format string, args ...any) {
	l.log.Error("pebble: " + fmt.Sprintf(format, args...))
	os.Exit(1)
}
