package daemon

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/perflock/perflock/proto"
)

// runIn runs a daemon on the socket dir/s until the returned stop is
// called: it stops it as SIGTERM would (a clean stop), or, with crash,
// leaves the waiting file as it was, as SIGKILL would.
func runIn(t *testing.T, dir string, cfg Config) (stop func(crash bool)) {
	t.Helper()
	cfg.Socket = filepath.Join(dir, "s")
	_, stopped := serveUntilStopped(t, cfg)
	return func(crash bool) {
		b, _ := os.ReadFile(filepath.Join(dir, waitersFile))
		stopped()
		if crash {
			os.WriteFile(filepath.Join(dir, waitersFile), b, 0o600)
		}
	}
}

// A ticket that was granted and released before perflockd restarted
// cannot rejoin at its old place ahead of those who wait: it queues as a
// new request, after a clean restart or a crash alike.
func TestAnOldTicketCannotJumpTheQueueAfterARestart(t *testing.T) {
	old := rejoinGrace
	rejoinGrace = 200 * time.Millisecond
	t.Cleanup(func() { rejoinGrace = old })
	for _, crash := range []bool{false, true} {
		dir, err := os.MkdirTemp("", "pld")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		stop := runIn(t, dir, Config{})
		sock := filepath.Join(dir, "s")
		a := acquire(t, sock, proto.Msg{Mode: "exclusive"})
		a.expect(proto.TGranted)
		b := acquire(t, sock, proto.Msg{Mode: "exclusive"})
		q := b.expect(proto.TQueued) // its ticket and token
		a.nc.Close()
		b.expect(proto.TGranted)
		b.nc.Close()
		waitList(t, sock, "")
		if crash {
			// A crash after the waiting file was saved (it is at most
			// waitersDelay behind): it lists nobody.
			waitFile(t, filepath.Join(dir, waitersFile), "last 2\n")
		}
		stop(crash)

		runIn(t, dir, Config{})
		h := acquire(t, sock, proto.Msg{Mode: "exclusive"})
		if crash { // new requests wait for rejoiners first (rejoinGrace)
			h.expect(proto.TQueued)
		}
		h.expect(proto.TGranted)
		w := acquire(t, sock, proto.Msg{Mode: "exclusive"})
		wq := w.expect(proto.TQueued)
		again := acquire(t, sock, proto.Msg{Mode: "exclusive", Ticket: q.Ticket, Token: q.Token})
		if m := again.expect(proto.TQueued); m.Position != 2 || m.Ticket <= wq.Ticket {
			t.Fatalf("crash %v: the old ticket %d rejoined: %+v; want a new ticket behind %d, at position 2", crash, q.Ticket, m, wq.Ticket)
		}
	}
}

// waitFile polls until path reads want.
func waitFile(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if string(b) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s reads %q, want %q", path, b, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A daemon killed moments after its first start, before it saved any
// waiter, still lets the requests it queued rejoin at their places.
func TestWaitersOfADaemonKilledAtOnceRejoin(t *testing.T) {
	dir, err := os.MkdirTemp("", "pld")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	old := waitersDelay
	waitersDelay = time.Hour // nothing saved after the start
	t.Cleanup(func() { waitersDelay = old })
	stop := runIn(t, dir, Config{})
	sock := filepath.Join(dir, "s")
	h := acquire(t, sock, proto.Msg{Mode: "exclusive"})
	h.expect(proto.TGranted)
	w := acquire(t, sock, proto.Msg{Mode: "exclusive"})
	q := w.expect(proto.TQueued)
	stop(true)

	runIn(t, dir, Config{})
	again := acquire(t, sock, proto.Msg{Mode: "exclusive", Ticket: q.Ticket, Token: q.Token})
	// Nothing holds any more: it is granted at once, with its old ticket.
	if m := again.expect(proto.TGranted); m.Ticket != q.Ticket {
		t.Fatalf("the waiter of a daemon killed at once rejoined as %+v, want its ticket %d", m, q.Ticket)
	}
}
