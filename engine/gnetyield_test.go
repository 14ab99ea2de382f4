package engine

import (
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// TestYieldServesReadySockets: on a real gnet loop, what a task yields runs
// after the loop has served a socket that became readable while the task
// ran, whereas what it executes runs before.
func TestYieldServesReadySockets(t *testing.T) {
	s := startServer(t, Config{Loops: 1})
	c := dialWS(t, s.Addr().String())
	c.send(`{"id":1,"op":"subscribe","channel":"room"}`)
	c.read() // the ack: the connection is served
	l := s.hub.allLoops()[0]

	started, release := make(chan struct{}), make(chan struct{})
	type seen struct{ yielded, executed bool }
	got := make(chan seen, 1)
	if err := l.exec.Execute(func() {
		var conn *Conn
		for k := range l.conns {
			conn = k
		}
		before := conn.lastRead
		close(started)
		<-release // the client's frame is in the socket meanwhile
		var r seen
		if err := l.exec.Execute(func() { r.executed = conn.lastRead != before }); err != nil {
			t.Error(err)
		}
		if err := l.exec.Yield(func() { r.yielded = conn.lastRead != before; got <- r }); err != nil {
			t.Error(err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	<-started
	time.Sleep(10 * time.Millisecond)
	if _, err := c.nc.Write(clientFrame(true, ws.OpPing, nil)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	close(release)
	select {
	case r := <-got:
		if !r.yielded {
			t.Error("the yielded function ran before the ready socket was served")
		}
		if r.executed {
			t.Log("the executed function ran after the socket was served (gnet's order changed?)")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the yielded function did not run")
	}
}
