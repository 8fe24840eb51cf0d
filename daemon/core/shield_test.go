package core

import (
	"errors"
	"testing"

	"github.com/perflock/perflock/lockq"
)

func (h *harness) shielded(err error, want string) {
	h.t.Helper()
	h.step(ShieldDone{Err: err, Now: h.now}, want)
}

// The shield goes up before an exclusive job is placed and comes down once
// its lease ends; shared jobs and jobs of named locks never raise it.
func TestTheShieldIsUpWhileAnExclusiveJobRuns(t *testing.T) {
	h := freezing(t, Config{Policy: lockq.Freeze, Shield: true})
	h.acquire(1, "shared pls", "c1:granted")
	h.place(1, "place(s-1)")
	h.placed(1, "save(s-1) c1:placed watch(s-1)")
	h.acquire(2, "exclusive res=bk", "c2:granted")
	h.place(2, "place(x-2)") // named locks: no shield
	h.acquire(3, "exclusive report", "freeze c3:queued@1")
	h.froze("c1:frozen c3:granted")
	h.place(3, "shield(on)")
	h.phases("s-1:running* x-2:placing x-3:preparing")
	h.shielded(nil, "place(x-3)")
	h.placed(3, "save(x-3) c3:placed watch(x-3)")
	if v := h.c.Jobs(); !v[2].Shielded || v[0].Shielded || v[1].Shielded {
		t.Fatalf("listing %+v: want x-3 alone shielded", v)
	}
	h.step(Done{Conn: 3, Now: h.now}, "report(x-3,frozen=1,shielded)")
	h.emptied(3, "")
	h.closed(3, "drop(x-3) end(x-3) shield(off) thaw")
	h.shielded(nil, "")
	h.froze("c1:thawed")
}

// A group shares one shield: the first member raises it, the others wait
// for it or, once it is up, go on at once; the last one to end lowers it.
func TestAGroupSharesTheShield(t *testing.T) {
	h := newHarness(t, Config{Shield: true})
	for c := ConnID(1); c <= 3; c++ {
		h.acquire(c, "group(7)", h.show([]Effect{Reply{Conn: c, Kind: SayGranted}}))
	}
	h.place(1, "shield(on)")
	h.place(2, "")
	h.shielded(nil, "place(x-1) place(x-2)")
	h.place(3, "") // the shield is up: its turn, after the two under way
	for _, c := range []ConnID{1, 2} {
		h.closed(c, "")
	}
	h.placed(1, "save(x-1) watch(x-1) place(x-3)")
	h.emptied(1, "drop(x-1) end(x-1)")
	h.placed(2, "save(x-2) watch(x-2)")
	h.emptied(2, "drop(x-2) end(x-2)")
	h.closed(3, "")
	h.placed(3, "save(x-3) watch(x-3)")
	h.emptied(3, "drop(x-3) end(x-3) shield(off)")
}

// A shield that cannot be raised does not keep the machine from anybody:
// the job runs unshielded, and its report says why. The next job tries
// again once the users are gone; a failed lowering is tried again.
func TestAShieldThatFailsLetsJobsRunAndSaysWhy(t *testing.T) {
	h := newHarness(t, Config{Shield: true})
	h.acquire(1, "exclusive report", "c1:granted")
	h.place(1, "shield(on)")
	h.shielded(errors.New("no cpuset controller"), "place(x-1)")
	h.placed(1, "save(x-1) c1:placed watch(x-1)")
	h.step(Done{Conn: 1, Now: h.now}, "report(x-1,frozen=0,no shield: no cpuset controller)")
	h.emptied(1, "")
	h.closed(1, "drop(x-1) end(x-1)") // never up: nothing to lower

	h.acquire(2, "exclusive", "c2:granted")
	h.place(2, "shield(on)")
	h.shielded(nil, "place(x-2)")
	h.closed(2, "")
	h.placed(2, "save(x-2) watch(x-2)")
	h.emptied(2, "drop(x-2) end(x-2) shield(off)")
	h.shielded(errors.New("busy"), "")
	h.tick(Second, "shield(off)")
	h.shielded(nil, "")
}

// The pin and the shield both prepare the machine, the pin first.
func TestThePinComesBeforeTheShield(t *testing.T) {
	h := newHarness(t, Config{Shield: true})
	h.acquire(1, "exclusive gov=performance", "c1:granted")
	h.place(1, "pin(performance)")
	h.step(PinDone{Now: h.now}, "shield(on)")
	h.phases("x-1:preparing")
	h.shielded(nil, "place(x-1)")
}

// A shield an earlier daemon left raised stays up while an adopted
// exclusive job runs and comes down after it; with no such job, at once.
func TestAdoptionKeepsOrLowersTheShield(t *testing.T) {
	h := newHarness(t, Config{Shield: true})
	h.step(Adopt{Jobs: []Adopted{{Ticket: 4, Where: "cg/x-4"}}, Shield: ShieldLeft{Found: true}, Now: h.now}, "watch(x-4)")
	h.emptied(4, "end(x-4) shield(off)")

	h = newHarness(t, Config{Shield: true})
	h.step(Adopt{Jobs: []Adopted{{Ticket: 4, Shared: true, Where: "cg/s-4"}}, Shield: ShieldLeft{Found: true}, Now: h.now}, "watch(s-4) shield(off)")
}
