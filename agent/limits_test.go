package agent

import "testing"

// TestUserCounts: the table counts connections per user through opens,
// user changes, closes and a worker's exit.
func TestUserCounts(t *testing.T) {
	tab := newTable(2)
	tab.open("a", &connRec{worker: 0, user: "alice"})
	tab.open("b", &connRec{worker: 1, user: "alice"})
	tab.open("c", &connRec{worker: 1})
	if n := tab.users["alice"]; n != 2 || len(tab.users) != 1 {
		t.Fatalf("users = %v, want alice: 2", tab.users)
	}
	tab.setUser(tab.conn("c"), "alice")
	tab.setUser(tab.conn("a"), "bob")
	if tab.users["alice"] != 2 || tab.users["bob"] != 1 {
		t.Fatalf("after user changes: %v", tab.users)
	}
	tab.close("a")
	tab.dropWorker(1)
	if len(tab.users) != 0 {
		t.Fatalf("after every connection left: %v", tab.users)
	}
}

func TestOverUserLimit(t *testing.T) {
	a := &Agent{cfg: Config{MaxConnsPerUser: 1}, tab: newTable(1)}
	a.tab.open("a", &connRec{user: "alice"})
	if a.overUserLimitLocked("alice") {
		t.Fatal("one connection over a limit of one")
	}
	a.tab.open("b", &connRec{user: "alice"})
	if !a.overUserLimitLocked("alice") || a.overUserLimitLocked("") {
		t.Fatal("two connections not over a limit of one, or anonymous counted")
	}
	a.cfg.MaxConnsPerUser = 0
	if a.overUserLimitLocked("alice") {
		t.Fatal("a limit of 0 (none) enforced")
	}
}
