package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perflock/perflock/proto"
)

// The history survives a reload, is per user and key, prunes entries older
// than 30 days, and leaves no temporary file behind.
func TestHistoryRecordsReloadsAndPrunes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	h := loadHistory(dir, testLogger(t))
	now := time.Now()
	h.record(1000, "old", now.Add(-31*24*time.Hour))
	h.record(1000, "nightly", now)
	h.flush()
	h2 := loadHistory(dir, testLogger(t))
	if last, ok := h2.lastSuccess(1000, "nightly"); !ok || last.UnixMilli() != now.UnixMilli() {
		t.Errorf("nightly after reload: %v %v, want %v", last, ok, now)
	}
	if _, ok := h2.lastSuccess(1001, "nightly"); ok {
		t.Error("another user's key counted")
	}
	if _, ok := h2.lastSuccess(1000, "old"); ok {
		t.Error("an entry older than 30 days was kept")
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}

// The history is bounded: beyond historyMaxPerUser keys of one user the
// user's oldest are forgotten, beyond historyMaxTotal in all the oldest of
// anyone's; a file written before the bounds is cut to them when loaded.
func TestHistoryForgetsTheOldestBeyondItsBounds(t *testing.T) {
	dir := t.TempDir()
	h := loadHistory(dir, testLogger(t))
	base := time.Now().Add(-time.Hour)
	at := func(i int) time.Time { return base.Add(time.Duration(i) * time.Millisecond) }
	// One user: its oldest go.
	for i := range historyMaxPerUser + 10 {
		h.record(1, fmt.Sprintf("k%d", i), at(i))
	}
	if h.n != historyMaxPerUser || len(h.last[1]) != historyMaxPerUser {
		t.Fatalf("one user with %d keys: %d kept, want %d", historyMaxPerUser+10, h.n, historyMaxPerUser)
	}
	for _, k := range []string{"k0", "k9"} {
		if _, ok := h.lastSuccess(1, k); ok {
			t.Errorf("user 1's oldest key %s kept", k)
		}
	}
	if _, ok := h.lastSuccess(1, "k10"); !ok {
		t.Error("user 1's key k10 forgotten, but it is among its newest")
	}
	// Many users: the oldest of all go, user 1's first.
	users := historyMaxTotal/historyMaxPerUser + 1
	for u := 2; u <= users; u++ {
		for i := range historyMaxPerUser {
			h.record(uint32(u), fmt.Sprintf("k%d", i), at(u*historyMaxPerUser+i))
		}
	}
	if h.n != historyMaxTotal {
		t.Fatalf("%d users with %d keys each: %d kept, want %d", users, historyMaxPerUser, h.n, historyMaxTotal)
	}
	if _, ok := h.last[1]; ok {
		t.Errorf("user 1, whose keys are the oldest, keeps %d", len(h.last[1]))
	}
	if _, ok := h.lastSuccess(2, "k0"); !ok {
		t.Error("user 2's oldest key forgotten with room for it")
	}
	// A file from before the bounds: cut when loaded.
	doc := historyDoc{Completed: map[string]int64{}}
	for i := range historyMaxPerUser + 5 {
		doc.Completed[fmt.Sprintf("7/k%d", i)] = at(i).UnixMilli()
	}
	b, _ := json.Marshal(doc)
	if err := os.WriteFile(filepath.Join(dir, historyFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	h2 := loadHistory(dir, testLogger(t))
	if h2.n != historyMaxPerUser {
		t.Errorf("loading %d keys of one user kept %d, want %d", historyMaxPerUser+5, h2.n, historyMaxPerUser)
	}
	if _, ok := h2.lastSuccess(7, "k4"); ok {
		t.Error("loading kept the oldest keys")
	}
	// And beyond the total: the newest of all are kept.
	for u := range users {
		for i := range historyMaxPerUser {
			doc.Completed[fmt.Sprintf("%d/k%d", 100+u, i)] = at(u*historyMaxPerUser + i).UnixMilli()
		}
	}
	b, _ = json.Marshal(doc)
	if err := os.WriteFile(filepath.Join(dir, historyFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	h2 = loadHistory(dir, testLogger(t))
	if h2.n != historyMaxTotal {
		t.Errorf("loading %d keys kept %d, want %d", len(doc.Completed), h2.n, historyMaxTotal)
	}
	if _, ok := h2.lastSuccess(100, "k999"); ok {
		t.Error("loading kept user 100's keys, among the oldest")
	}
	if _, ok := h2.lastSuccess(uint32(100+users-1), "k0"); !ok {
		t.Error("loading forgot the newest user's keys")
	}
}

// gatedWrites is a history writer that tells when a write starts and waits
// to be let through; it records what each write wrote.
type gatedWrites struct {
	started chan struct{}
	gate    chan struct{}
	mu      sync.Mutex
	wrote   []historyDoc
	inside  int // writes in flight
	overlap bool
}

func newGatedWrites() *gatedWrites {
	return &gatedWrites{started: make(chan struct{}, 100), gate: make(chan struct{})}
}

func (g *gatedWrites) write(path string, b []byte) error {
	g.mu.Lock()
	g.inside++
	g.overlap = g.overlap || g.inside > 1
	g.mu.Unlock()
	g.started <- struct{}{}
	<-g.gate
	var doc historyDoc
	err := json.Unmarshal(b, &doc)
	g.mu.Lock()
	g.inside--
	g.wrote = append(g.wrote, doc)
	g.mu.Unlock()
	return err
}

func (g *gatedWrites) writes() []historyDoc {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]historyDoc(nil), g.wrote...)
}

// completeKeyed runs a keyed job to a successful end over the socket: a
// named lock (no process to place), done with status 0, closed.
func completeKeyed(t *testing.T, sock, key string) {
	t.Helper()
	c := acquire(t, sock, proto.Msg{Mode: "exclusive", Resources: []string{"keyed"}, Key: key})
	for m := c.recv(); m.Type != proto.TGranted; m = c.recv() { // queued behind the last one until its close is seen
		if m.Type != proto.TQueued && m.Type != proto.TWaiting {
			t.Fatalf("got %+v, want granted", m)
		}
	}
	c.send(proto.Msg{Type: proto.TDone, Status: 0})
	c.nc.Close()
}

// waitRecorded waits until the daemon's history holds key (uid: this
// test's): the loop records it after the client's done, with no reply.
func waitRecorded(t *testing.T, s *server, key string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ok bool
		inLoop(s, func() { _, ok = s.history.lastSuccess(uint32(os.Geteuid()), key) })
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("key %s was not recorded", key)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runExclusive is a client's whole exclusive run, from connecting to done,
// within limit.
func runExclusive(sock string, limit time.Duration) error {
	nc, err := net.DialTimeout("unix", sock, limit)
	if err != nil {
		return err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(limit))
	r := proto.NewReader(nc)
	for _, m := range []proto.Msg{
		{Type: proto.THello, Version: proto.Version, Client: "test"},
		{Type: proto.TAcquire, Mode: "exclusive", Command: []string{"other"}},
	} {
		if err := proto.Write(nc, m); err != nil {
			return err
		}
		for {
			got, err := r.Read()
			if err != nil {
				return fmt.Errorf("waiting for the answer to %s: %w", m.Type, err)
			}
			if got.Type == proto.THello || got.Type == proto.TGranted {
				break
			}
			if got.Type == proto.TError {
				return fmt.Errorf("%s: %s", m.Type, got.Message)
			}
		}
	}
	return proto.Write(nc, proto.Msg{Type: proto.TDone, Status: 0})
}

// A history write that does not end (a slow or stalled disk) holds up no
// one: while it is in flight another client is granted and released, and
// keyed jobs keep completing; their completions go out together in one
// later write, with the latest content, and never two writes at once.
// (Before, the loop wrote and synced the whole file at every keyed
// completion: everyone waited for the disk.)
func TestSlowHistoryWriteHoldsUpNoOtherClient(t *testing.T) {
	s, sock := startServer(t, Config{})
	g := newGatedWrites()
	s.history.mu.Lock()
	s.history.write = g.write
	s.history.mu.Unlock()
	release := sync.OnceFunc(func() { close(g.gate) })
	t.Cleanup(release) // before the daemon stops: its final flush writes too

	completeKeyed(t, sock, "k0")
	select {
	case <-g.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the history was not written after a keyed completion")
	}
	// The write is stuck. Another client's whole run goes through.
	if err := runExclusive(sock, 10*time.Second); err != nil {
		t.Fatalf("another client was not served while a history write was in flight (the loop waits for the disk): %v", err)
	}
	const more = 10
	for i := 1; i <= more; i++ {
		completeKeyed(t, sock, fmt.Sprintf("k%d", i))
	}
	waitRecorded(t, s, fmt.Sprintf("k%d", more))
	release()
	// One more write, with every key.
	deadline := time.Now().Add(10 * time.Second)
	for len(g.writes()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d writes after the stalled one ended, want one more", len(g.writes())-1)
		}
		time.Sleep(5 * time.Millisecond)
	}
	ws := g.writes()
	if len(ws) != 2 {
		t.Errorf("%d writes for %d completions made during one stalled write, want 2: they coalesce", len(ws), more+1)
	}
	if n := len(ws[len(ws)-1].Completed); n != more+1 {
		t.Errorf("the last write holds %d keys, want %d: %v", n, more+1, ws[len(ws)-1].Completed)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.overlap {
		t.Error("two history writes were in flight at once")
	}
}

// What the writer had yet to save when the daemon stops is saved before
// Run returns.
func TestHistoryIsSavedWhenTheDaemonStops(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := open(ctx, Config{Socket: filepath.Join(dir, "s"), Driver: "none", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.serve() }()
	completeKeyed(t, s.cfg.Socket, "first")
	completeKeyed(t, s.cfg.Socket, "second") // within historySaveEvery of the first: left to the writer's next turn
	waitRecorded(t, s, "second")
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	h := loadHistory(dir, testLogger(t))
	for _, k := range []string{"first", "second"} {
		if _, ok := h.lastSuccess(uint32(os.Geteuid()), k); !ok {
			t.Errorf("completion of %s not saved when the daemon stopped", k)
		}
	}
}
