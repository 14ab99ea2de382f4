// Package static serves the public folder over HTTP for the engine: small
// files from memory on the event loops, everything else on a pool of
// worker goroutines that never run on a loop. It owns the in-memory file
// cache, the pool (which also runs the engine's other off-loop requests,
// /metrics and the server API, with handlers the engine passes in) and
// the adapter to fasthttp's file server.
//
// # The engine's view
//
// The engine parses a request head on a loop, routes it, and for a file
// calls, on that loop:
//
//	resp, status, body, ok := srv.AppendCached(buf, &loopDate, hdr, unsent, keepAlive)
//
// With ok the whole response is in resp (the caller writes it, logs it and
// keeps resp as its scratch buffer); without ok the caller hands the
// request over with Go and leaves the connection busy until the pool
// calls back Conn.Answered on the connection's loop. Start starts the
// workers and Close stops them.
//
// # The file cache
//
// The cache keeps files of up to MaxFile (256 KiB) as prepared responses:
// the header lines of each encoding (identity, and gzip and brotli when
// gzip shrinks the first 4 KiB below 80 %, as fasthttp's FS decides) and
// the bodies, keyed by URL path. An entry never changes once built: a
// changed file gets a new entry, so its bytes may be written to sockets
// from any goroutine. The cache holds at most 64 MiB (bodies, heads and a
// fixed overhead per entry); past that the entries used longest ago are
// dropped.
//
// A loop answers from the cache only what it can without touching the
// disk: a GET or HEAD without Range, for a path that needs no decoding or
// normalizing (no '%', '\', ':', '#', empty or dot-prefixed segment, so
// no dotfile and no way out of the folder), whose entry was checked
// against its file less than a second ago, on a connection that is not
// congested. It evaluates If-None-Match (weak comparison), else
// If-Modified-Since, and answers 200 or 304 with Date, Last-Modified, a
// weak ETag W/"<size>-<mtime>" and, for compressed variants, Vary. It
// allocates nothing.
//
// Revalidation: the first request for an entry whose last check is a
// second old or more claims the check (a compare-and-swap on the check
// time) and goes to a worker, which compares the file's size, mtime and
// inode with the entry and rebuilds or drops it; requests arriving
// meanwhile are still answered from the entry. An edited file is served
// within about a second (plus the engine's 250 ms coarse clock) of the
// edit.
//
// # The worker pool
//
// Workers (16 goroutines, 1024 requests queued at most; Go reports false
// past that and the engine answers 503) fill and revalidate the cache
// (open, fstat, read, compress), answer a cached file they just checked,
// and fall back to fasthttp's FS for the rest: files over MaxFile,
// ranges (206, 416), folder redirects, 404s (dotfiles, paths outside the
// folder, symbolic links leading out of it, missing files). They stream
// a response to the connection's loop in 64 KiB chunks through
// Conn.AsyncWrite and wait for each to be taken; while the connection
// holds more than 512 KiB unsent they pause, and they give a peer that
// reads nothing up after 30 s. A job is pooled with its buffers and
// callbacks; its last chunk carries the callback that reports the
// response (Conn.Answered) and returns the job to the pool.
//
// # Loops, workers and concurrency
//
// Runs on a loop: AppendCached, Go, and the callbacks the pool gives to
// Conn.AsyncWrite (hence Conn.Sent and Conn.Answered). Never runs on a
// loop: anything that reads the disk, compresses, or waits (the workers).
// AppendCached and Go may be called from any number of loops at once; a
// Date, and the head passed in, belong to one loop. The cache is guarded
// by a read-write lock (loops only read it) and per-entry atomics (check
// and use times). Start and Close are called once each by the owner;
// Pending, RunPending and DropPending are for harnesses that drive
// connections by hand without Start.
package static
