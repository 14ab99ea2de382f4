package agent

import (
	"io/fs"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zenconn/server/nodemsg"
	"github.com/zenconn/server/store"
)

// BenchmarkSessionStorm writes what a connect storm of a million
// connections hands the store, through the agent's own handlers of a
// worker's Opened and Sub records: per connection its session (opened,
// then updated by its subscription) and two audit records (connect,
// subscribe), into a real store in a temporary folder with the default
// sync mode (batch). It reports connections, sessions and records
// committed per second (until a Barrier returns), and the folder's size
// once the store is closed. Run it once:
//
//	go test -run '^$' -bench SessionStorm -benchtime 1x ./agent/
func BenchmarkSessionStorm(b *testing.B) {
	const conns, workers = 1_000_000, 56
	for b.Loop() {
		dir := b.TempDir()
		reg := prometheus.NewRegistry()
		st, err := store.Open(dir, store.Options{Sync: store.SyncBatch, Registerer: reg})
		if err != nil {
			b.Fatal(err)
		}
		a, err := New(Config{Workers: workers, Command: func(int) (string, []string) { return "false", nil },
			Socket: filepath.Join(b.TempDir(), "api.sock"), Store: st, Node: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		stormSessions(a, conns)
		if err := st.Barrier(); err != nil {
			b.Fatal(err)
		}
		secs := time.Since(start).Seconds()
		if n := counterValue(b, reg, "zenconn_audit_records_total"); n != 2*conns {
			b.Fatalf("%v audit records committed, want %d", n, 2*conns)
		}
		if err := st.Close(); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(conns/secs, "conns/s")
		b.ReportMetric(conns/secs, "sessions/s")
		b.ReportMetric(2*conns/secs, "records/s")
		size := folderSize(b, dir)
		b.ReportMetric(float64(size)/(1<<20), "MiB-on-disk")
		b.ReportMetric(float64(size)/conns, "disk-B/conn")
	}
}

// stormSessions hands the agent n connections, spread over its workers,
// each opened then subscribed, as their workers' records would.
func stormSessions(a *Agent, n int) {
	base := uint64(time.Now().UnixMicro()) * nodemsg.MaxWorkers
	for i := range n {
		s := a.slots[i%len(a.slots)]
		id := strconv.FormatUint(base+uint64(i)*nodemsg.MaxWorkers+uint64(s.id), 36)
		a.onOpened(s, &nodemsg.Msg{Kind: nodemsg.KindOpened, Conn: id, Remote: "127.0.0." + strconv.Itoa(2+i%200) + ":" +
			strconv.Itoa(32768+i%28000), Agent: "Go-http-client/1.1", Proto: "json"})
		a.onSub(s, &nodemsg.Msg{Kind: nodemsg.KindSub, Conn: id, Channel: "room-" + strconv.Itoa(i%1000)})
	}
}

// counterValue returns the value of the counter of reg named name.
func counterValue(b *testing.B, reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	b.Fatalf("no %s", name)
	return 0
}

// folderSize is the bytes of the files under dir.
func folderSize(b *testing.B, dir string) int64 {
	var size int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			size += info.Size()
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return size
}
