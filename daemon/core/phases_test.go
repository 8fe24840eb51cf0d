package core

import (
	"testing"

	"github.com/perflock/perflock/lockq"
)

type lockqT = lockq.Ticket

// Each case brings the job of connection 1 (x-1 or x-2) to a phase, with
// an exclusive waiter on connection 2 or 3 behind it, then loses its client
// or cancels it, and says what follows until the waiter is granted.
func TestCancelAndClientLossInEveryPhase(t *testing.T) {
	root := func(h *harness, ticket uint64) Cancel {
		return Cancel{Conn: 9, UID: 0, User: "root", Ticket: lockqTicket(ticket), Now: h.now}
	}
	for _, c := range []struct {
		name  string
		setup func(h *harness) // leaves x-1 (conn 1) in its phase
		phase string
		gone  func(h *harness) // the client goes: until the waiter holds
		cncl  func(h *harness) // cancelled instead: until the waiter holds
	}{{
		name:  "granted",
		setup: func(h *harness) {},
		phase: "x-1:granted",
		gone:  func(h *harness) { h.closed(1, "c2:granted") },
		cncl: func(h *harness) {
			h.step(root(h, 1), "c1:cancelled! c9:cancelled!")
			h.closed(1, "c2:granted")
		},
	}, {
		name:  "preparing",
		setup: func(h *harness) { h.place(1, "pin(performance)") },
		phase: "x-1:preparing",
		gone: func(h *harness) {
			h.closed(1, "c2:granted")
			h.step(PinDone{Now: h.now}, "unpin") // set meanwhile: restored
		},
		cncl: func(h *harness) {
			h.step(root(h, 1), "c1:cancelled! c9:cancelled!")
			h.closed(1, "c2:granted")
		},
	}, {
		name: "running",
		setup: func(h *harness) {
			h.place(1, "pin(performance)")
			h.pinned()
			h.placed(1, "save(x-1) c1:placed watch(x-1)")
		},
		phase: "x-1:running",
		gone: func(h *harness) {
			h.closed(1, "")
			h.emptied(1, "drop(x-1) end(x-1) unpin c2:granted")
		},
		cncl: func(h *harness) {
			h.step(root(h, 1), "c1:cancelled stop(x-1) c9:cancelled!")
			h.emptied(1, "")
			h.closed(1, "drop(x-1) end(x-1) unpin c2:granted")
		},
	}, {
		name: "empty",
		setup: func(h *harness) {
			h.place(1, "pin(performance)")
			h.pinned()
			h.placed(1, "save(x-1) c1:placed watch(x-1)")
			h.emptied(1, "")
		},
		phase: "x-1:empty",
		gone:  func(h *harness) { h.closed(1, "drop(x-1) end(x-1) unpin c2:granted") },
		cncl: func(h *harness) {
			h.step(root(h, 1), "c1:cancelled stop(x-1) c9:cancelled!")
			h.closed(1, "drop(x-1) end(x-1) unpin c2:granted")
		},
	}} {
		for _, how := range []string{"gone", "cancelled"} {
			t.Run(c.name+"/"+how, func(t *testing.T) {
				h := newHarness(t, Config{})
				h.acquire(1, "exclusive gov=performance", "c1:granted")
				h.acquire(2, "exclusive", "c2:queued@1")
				c.setup(h)
				h.phases(c.phase + " x-2:waiting")
				if how == "gone" {
					c.gone(h)
				} else {
					c.cncl(h)
				}
				h.phases("x-2:granted")
			})
		}
	}
}

// The phases where a placement is under way or in line need a second
// placement to hold the line: x-1 and x-2 of group 7 both hold.
func TestCancelAndClientLossWhilePlacing(t *testing.T) {
	setup := func(t *testing.T) *harness {
		h := newHarness(t, Config{MaxPlacing: 1})
		h.acquire(1, "group(7)", "c1:granted")
		h.acquire(2, "group(7)", "c2:granted")
		h.acquire(3, "exclusive", "c3:queued@1")
		h.place(2, "place(x-2)")
		h.place(1, "")
		h.phases("x-1:place-queued x-2:placing x-3:waiting")
		return h
	}
	t.Run("place-queued/gone", func(t *testing.T) {
		h := setup(t)
		h.closed(1, "")
		h.placed(2, "save(x-2) c2:placed watch(x-2)") // x-1 left the line: nothing more to place
		h.closed(2, "")
		h.emptied(2, "drop(x-2) end(x-2) c3:granted")
	})
	t.Run("place-queued/cancelled", func(t *testing.T) {
		h := setup(t)
		h.step(Cancel{Conn: 9, User: "root", Ticket: 1, Now: h.now}, "c1:cancelled! c9:cancelled!")
		h.closed(1, "")
		h.placed(2, "save(x-2) c2:placed watch(x-2)")
	})
	t.Run("placing/gone", func(t *testing.T) {
		h := setup(t)
		h.closed(2, "") // the placement decides
		h.placed(2, "save(x-2) watch(x-2) place(x-1)")
		h.emptied(2, "drop(x-2) end(x-2)")
	})
	t.Run("placing/failed", func(t *testing.T) {
		h := setup(t)
		h.closed(2, "")
		h.step(PlaceDone{Ticket: 2, Err: errString("no scope"), Now: h.now}, "place(x-1)")
		h.phases("x-1:placing x-3:waiting")
	})
}

// A waiting job leaves the line when its client goes, when it is cancelled
// and when its timeout passes; the line closes up behind it.
func TestAWaiterLeavesTheLineEveryWay(t *testing.T) {
	for _, how := range []string{"gone", "cancelled", "expired"} {
		t.Run(how, func(t *testing.T) {
			h := newHarness(t, Config{})
			h.acquire(1, "exclusive", "c1:granted")
			h.acquire(2, "exclusive timeout=5s", "c2:queued@1")
			h.acquire(3, "exclusive", "c3:queued@2")
			switch how {
			case "gone":
				h.closed(2, "")
			case "cancelled":
				h.step(Cancel{Conn: 9, UID: 1000, User: "alice", Ticket: 2, Now: h.now}, "c2:cancelled! c9:cancelled!")
				h.closed(2, "")
			case "expired":
				h.tick(4*Second, "")
				h.tick(Second, "c2:expired! c3:waiting@1")
				h.closed(2, "")
			}
			h.phases("x-1:granted x-3:waiting")
			h.closed(1, "c3:granted")
		})
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func lockqTicket(n uint64) lockqT { return lockqT(n) }

func (h *harness) pinned() { h.t.Helper(); h.step(PinDone{Now: h.now}, "place(x-1)") }
