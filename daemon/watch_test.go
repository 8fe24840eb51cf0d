package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/perflock/perflock/proto"
)

// startWatched is startDaemon that also returns the daemon's server, for
// looking at its state from its loop (inLoop).
func startWatched(t *testing.T, cfg Config) (*server, string) {
	t.Helper()
	return startServer(t, cfg)
}

// inLoop runs f on the daemon's loop and waits for it.
func inLoop(s *server, f func()) {
	done := make(chan struct{})
	s.post(func() { f(); close(done) })
	<-done
}

// watch connects a watcher.
func watch(t *testing.T, sock string) *client {
	t.Helper()
	c := dial(t, sock)
	c.hello()
	c.send(proto.Msg{Type: proto.TWatch})
	return c
}

// listing reads one whole listing.
func (c *client) listing() []proto.Entry {
	c.t.Helper()
	es := []proto.Entry{}
	for {
		m := c.expect(proto.TList)
		es = append(es, m.Entries...)
		if !m.More {
			return es
		}
	}
}

// until reads listings until one reads want, and returns how many it read.
func (c *client) until(want string) int {
	c.t.Helper()
	var seen []string
	for {
		got := states(c.listing())
		seen = append(seen, got)
		if got == want {
			return len(seen)
		}
		if len(seen) > 100 {
			c.t.Fatalf("listings %q, never %q", seen, want)
		}
	}
}

// A watcher gets the listing at once, then a new one after each change to
// the queue: a request queued, granted, a job cancelled and released.
func TestWatcherSeesEveryChangeOfTheQueue(t *testing.T) {
	sock := startDaemon(t, Config{})
	w := watch(t, sock)
	if es := w.listing(); len(es) != 0 {
		t.Fatalf("first listing of an empty queue: %v", es)
	}
	a := acquire(t, sock, proto.Msg{Mode: "exclusive"})
	a.expect(proto.TGranted)
	w.until("1:granted")
	b := acquire(t, sock, proto.Msg{Mode: "exclusive"})
	b.expect(proto.TQueued)
	w.until("1:granted 2:waiting")
	c := acquire(t, sock, proto.Msg{Mode: "shared"})
	c.expect(proto.TQueued)
	w.until("1:granted 2:waiting 3:waiting")
	b.nc.Close() // cancels a waiting request
	w.until("1:granted 3:waiting")
	a.nc.Close() // releases: the shared request is granted
	c.expect(proto.TGranted)
	w.until("3:granted")
	c.nc.Close()
	w.until("")

	// A watch takes no further message.
	w.send(proto.Msg{Type: proto.TList})
	if m := w.expect(proto.TError); m.Code != proto.CodeInvalid {
		t.Fatalf("a message on a watch: %+v, want an invalid error", m)
	}
}

// A watcher that never reads costs the daemon at most the one listing being
// written, however much the queue changes, and everyone else is served
// meanwhile; when it reads again, the next listing after that one is the
// queue as it is now, not a backlog of the states it missed.
func TestStalledWatcherCostsOneListingAndOthersAreServed(t *testing.T) {
	// No coalescing: every change would make a listing, were it not for
	// the one still being written.
	old := watchInterval
	t.Cleanup(func() { watchInterval = old }) // after the daemon stops
	watchInterval = 0
	s, sock := startWatched(t, Config{MaxWaiting: 1000})
	long := strings.Repeat("x", proto.MaxArgBytes)
	cmd := []string{long, long}
	// 64 entries of 4 KiB: a listing far larger than any socket buffer.
	acquire(t, sock, proto.Msg{Mode: "exclusive", Command: cmd}).expect(proto.TGranted)
	for range 63 {
		acquire(t, sock, proto.Msg{Mode: "exclusive", Command: cmd}).expect(proto.TQueued)
	}
	want := states(list(t, sock))

	stalled := watch(t, sock) // reads nothing until the end
	var w *watcher
	deadline := time.Now().Add(10 * time.Second)
	for w == nil || w.sent == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the watcher was never sent a listing")
		}
		time.Sleep(10 * time.Millisecond)
		inLoop(s, func() {
			for c := range s.watchers {
				w = &watcher{}
				*w = *c.watch
			}
		})
	}

	// 200 changes while it does not read; each client is served.
	for range 100 {
		c := acquire(t, sock, proto.Msg{Mode: "exclusive"})
		c.expect(proto.TQueued)
		c.nc.Close()
	}
	waitList(t, sock, want)

	var sent, outbox, oneListing, watchers int
	var busy bool
	inLoop(s, func() {
		watchers = len(s.watchers)
		for c := range s.watchers {
			sent, busy = c.watch.sent, c.watch.busy
			c.mu.Lock()
			outbox = len(c.outbox)
			c.mu.Unlock()
		}
		oneListing = len(s.list())
	})
	if watchers != 1 || sent != 1 || !busy {
		t.Fatalf("watchers %d, listings built %d, busy %v: want 1 watcher, 1 listing, still being written", watchers, sent, busy)
	}
	if outbox > oneListing {
		t.Fatalf("%d messages wait for the stalled watcher, more than one listing (%d)", outbox, oneListing)
	}

	// It reads again: the listing it was sent, then the queue as it is.
	if got := states(stalled.listing()); got != want {
		t.Fatalf("first listing %q, want %q", got, want)
	}
	if got := states(stalled.listing()); got != want {
		t.Fatalf("the listing after it is %q, want the queue as it is now, %q", got, want)
	}

	stalled.nc.Close()
	deadline = time.Now().Add(10 * time.Second)
	for watchers > 0 {
		if time.Now().After(deadline) {
			t.Fatal("a closed watcher is not forgotten")
		}
		time.Sleep(10 * time.Millisecond)
		inLoop(s, func() { watchers = len(s.watchers) })
	}
}

// Watchers count against the connection limits like any client.
func TestWatchersCountAgainstTheConnectionLimit(t *testing.T) {
	sock := startDaemon(t, Config{MaxConnsPerUser: 2})
	for range 2 {
		watch(t, sock).listing()
	}
	extra := dial(t, sock)
	extra.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if m, err := extra.r.Read(); err != nil || m.Type != proto.TError || m.Code != proto.CodeLimit {
		t.Fatalf("a third connection beside two watchers: %+v, %v; want a limit error", m, err)
	}
}
