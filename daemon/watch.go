package daemon

import (
	"time"

	"github.com/perflock/perflock/proto"
)

// Watchers (wholock --watch) get the listing at once and again whenever the
// queue changes, coalesced: at most one listing per watchInterval each, and
// a new one only once the previous one is written. A watcher that reads
// slowly gets fewer, fresher listings; one that stops reading holds at most
// one listing of the daemon's memory and is never sent more until it reads.
const (
	// watchSendBuffer is a watcher's socket send buffer: a paused watcher
	// finds little stale data queued in the kernel when it reads again.
	watchSendBuffer = 16 << 10
)

// watchInterval is the shortest time between two listings to one watcher;
// tests change it.
var watchInterval = 100 * time.Millisecond

// watcher is a watching connection's state. Loop-owned.
type watcher struct {
	stale bool      // the queue changed since the last listing was built
	busy  bool      // the last listing is not written yet
	last  time.Time // when the last listing was built
	sent  int       // listings built for it
}

// startWatching makes c a watcher: it gets the listing now and after every
// change, until it closes.
func (s *server) startWatching(c *conn) {
	if s.conns[c.id] != c {
		return // gone meanwhile
	}
	c.nc.SetWriteBuffer(watchSendBuffer)
	c.mu.Lock()
	c.watching = true
	c.mu.Unlock()
	c.watch = &watcher{stale: true}
	s.watchers[c] = struct{}{}
	s.watchDue = true
}

// changed notes that the queue or a job's state changed: watchers'
// listings are brought up to date after the current event.
func (s *server) changed() {
	if len(s.watchers) == 0 {
		return
	}
	for c := range s.watchers {
		c.watch.stale = true
	}
	s.watchDue = true
}

// watchDrained: c's writer has written everything queued.
func (s *server) watchDrained(c *conn) {
	if c.watch == nil || s.conns[c.id] != c {
		return
	}
	c.watch.busy = false
	s.watchDue = true
}

// feedWatchers sends the listing to every watcher that is stale, has
// nothing unwritten and was not sent one within watchInterval; the others
// are fed by a later change, their writer's report, or the timer. One
// listing, built only when someone needs it, serves them all.
func (s *server) feedWatchers(now time.Time) {
	s.watchDue = false
	var listing []proto.Msg
	var next time.Time
	for c := range s.watchers {
		w := c.watch
		if !w.stale || w.busy {
			continue
		}
		if at := w.last.Add(watchInterval); now.Before(at) {
			if next.IsZero() || at.Before(next) {
				next = at
			}
			continue
		}
		if listing == nil {
			listing = s.list()
		}
		w.stale, w.busy, w.last = false, true, now
		w.sent++
		c.sendListing(listing)
	}
	if !next.IsZero() {
		s.watchTimer.Reset(next.Sub(now))
	}
}

// unwatch forgets a closed connection's watcher.
func (s *server) unwatch(c *conn) {
	if c.watch != nil {
		delete(s.watchers, c)
	}
}
