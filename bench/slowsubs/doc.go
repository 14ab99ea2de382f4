// Command slowsubs measures what slow consumers cost a ZenConn node: it
// connects -subs WebSocket subscribers to one channel (from -sources
// loopback source addresses), lets them never read, publishes -publishes
// messages of -size bytes on the channel from one more connection, and
// prints the server's RSS (from /proc/PID/status) before and after, with
// how many subscribers were closed with 4001 (read once the run is over).
//
//	go run ./bench/slowsubs -addr 127.0.0.1:8080 -pid $(pgrep -n zenconn)
//
// Every wait is bounded; it talks to loopback addresses only.
package main
