// Package store keeps a node's sessions and its audit log in Pebble, in
// the node's data folder. One process opens a folder at a time (the agent);
// a stopped node's folder can be opened read-only to query it.
//
// # Writes
//
// Append and PutSession hand records to a single writer goroutine that
// commits them in groups (group commit): whatever arrived while the
// previous group was being written goes into the next one, and in the
// batch and none modes the writer lets a group grow for 1 ms first (unless
// producers are waiting for room). In those two modes a session's changes
// are also held for Options.SyncInterval after the first one (a Barrier, a
// full queue or Close writes them at once): a connection that opens,
// subscribes and closes within it is written once, already closed, and
// never gets an active-session marker, nor (when its first change was
// its opening, Session.First) the deletion of one. Records
// are never held that way. Records are never dropped: when the queue holds
// Options.QueueLimit records, Append blocks until the writer catches up,
// which pushes back on the workers and from them on publishing clients.
// What a commit guarantees depends on Options.Sync:
//
//	SyncAlways  every group is fsynced before its records' done callbacks
//	            run; a client acknowledged after done survives a power loss.
//	SyncBatch   groups are written to the write-ahead log at once and
//	            fsynced every Options.SyncInterval; a power loss loses at
//	            most the records of the last interval.
//	SyncNone    never fsynced by the store; the operating system writes the
//	            log back when it chooses.
//
// # The writer's pipeline
//
// What Append and PutSession hand over waits in the queue (queue.go): one
// lock, the records, the held sessions (hold.go), the backpressure on
// producers and the Barrier of queries. The writer goroutine (writer.go)
// runs one group at a time through four steps:
//
//	take     the queue hands over the waiting records (at most
//	         Options.MaxGroup) and the held sessions that are due
//	build    each record gets its time and sequence number (its key); the
//	         group becomes a batch of the log database and one of the
//	         index database (index entries, sessions, the index marker)
//	commit   both batches are committed (commit.go), fsynced with
//	         SyncAlways; syncLoop fsyncs the batch mode's commits
//	settle   the records' done callbacks run with the commit's result, and
//	         Barrier calls waiting for the group return
//
// Queries (query.go) read the databases directly; retention (retain.go)
// trims them with range deletions, ordered with the writer's commits by
// one lock.
//
// # Bounds
//
// What one record keeps of its data is bounded by Options.MaxData
// (capdata.go): beyond it, its first bytes, its size and its SHA-256; a
// refused attempt keeps only the size and hash. The folder's databases are
// bounded by Options.Quota (quota.go): past it the oldest records go
// first. On a full disk the writer keeps its group and waits (space.go):
// it commits only while the filesystem keeps Options.DiskReserve free,
// because Pebble takes a failed write-ahead log write as fatal and retries
// a failed flush without pause; the queue fills behind it and pushes back
// as above, no record is settled until it is written, and it resumes by
// itself when space returns. A query page is bounded in records, in
// bytes of JSON and in keys its filters skip (MaxScan), and stops when its
// context is done (budget.go).
//
// # Stop marks
//
// A node that stops with sessions open writes one stop mark (MarkStopped)
// instead of each session's end; sessions still active that connected
// before a mark read as ended at the first mark after their start, with
// its code. At the next start CloseActive writes their ends and
// disconnect records, in groups, in the background, and drops the marks
// (stopmark.go).
//
// # Databases
//
// The folder holds two Pebble databases. log/ holds the audit records
// only: their keys grow with time, so every flushed table lies after the
// tables already there and Pebble's compactions move tables instead of
// rewriting them. index/ holds everything else. In one database every
// flushed table would span all the spaces, and each compaction would
// rewrite the sessions and index entries it overlapped
// (BenchmarkChurnCycle; figures in bench/notes/churn.md). A group commit
// writes the log's batch, then the index's (with SyncAlways, both fsyncs
// at once); the index database keeps the key of the last record it indexed
// (spaceMeta), and Open indexes again the records after it, which a power
// cut between the two syncs can leave unindexed. Index entries whose
// record is gone are skipped by queries.
//
// # Keys
//
// Every key starts with a one-byte space. Times are Unix nanoseconds, and
// numbers are big-endian so that keys sort by time. Strings inside keys
// are preceded by their length (one uvarint), so any user id is safe.
//
//	'a' time:8 seq:8                          audit record (value: see codec.go)
//	'c' hour:4 len channel time:8 seq:8       channel index of the audit log
//	'u' hour:4 len user    time:8 seq:8       user index of the audit log
//	's' connected:8 conn                      session (value: see codec.go)
//	'x' connected:8 conn                      active session marker
//	't' hour:4 len user connected:8 conn      user index of the sessions
//	'm' 'i'                                   index/: time:8 seq:8 of the last record indexed
//
// hour is the Unix time in hours of the record (or of the session's
// start). Indexes are split by hour so that retention trims every index
// with one range deletion per space: index entries of a partly trimmed
// hour may outlive their record for up to an hour and are skipped by
// queries.
//
// Safe for concurrent use: every exported method of Store may be called
// from any goroutine. Records and sessions returned by queries are the
// caller's.
package store
