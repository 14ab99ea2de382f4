// Command floor is the cheapest server for the fixed-rate fan-out test of
// bench/run-fanout.sh: it measures the floor that any server delivering one
// small frame per subscriber socket pays on this machine, so that ZenConn and
// the baseline can be read against it.
//
// It speaks the same JSON subset as bench/baseline (welcome, subscribe,
// unsubscribe, publish, ping) over plain WebSocket. Requests are rare in that
// test, so they are read the ordinary way: a goroutine per connection
// (net.Conn, gobwas/ws for the upgrade and the frame headers, encoding/json).
// The fan-out is the floor:
//
//   - one hub goroutine owns every channel's subscriber list, a plain slice of
//     raw socket fds, and performs every write to every socket after the
//     WebSocket upgrade (so frames never interleave and no per-socket lock
//     exists);
//   - a publish is JSON-encoded and framed once, by the publisher's reader
//     goroutine, and handed to the hub as one event;
//   - the hub then runs one loop of write(fd, frame) over the slice: one
//     write(2) per subscriber, no allocation, no channel, no lock, no
//     goroutine wake-up per subscriber.
//
// The write is unix.RawSyscall(SYS_WRITE) by default (--write raw), as
// ZenConn's own write path does, rather than unix.Write (--write syscall):
// with GOMAXPROCS=1 and back-to-back writes, the runtime's syscall
// bookkeeping lets sysmon keep retaking the P from the writing thread and
// handing it to another thread, which here cost about 3-5 µs of kernel time
// per delivery in futex wake-ups and context switches; that is not part of
// the floor.
//
// The sockets are the non-blocking ones Go's net package created. A write
// that does not take the whole frame (EAGAIN or a short write) falls back to
// poll(2) on that one fd, from the hub goroutine, until the rest is written
// or --slow-timeout passes; the subscriber is then dropped as a slow consumer.
// The whole fan-out waits meanwhile: that is the price of the simplest
// possible loop, and it never happens in the benchmark, whose subscribers
// read everything (the counters printed on exit say whether it did).
//
// Everything is in main.go: the upgrade and the reader goroutine per
// connection, the hub goroutine that owns the subscriber lists and writes
// every frame, and the counters printed on exit. The JSON shapes it
// shares with bench/baseline are in bench/internal/wire.
package main
