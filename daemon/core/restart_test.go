package core

import (
	"testing"

	"github.com/perflock/perflock/lockq"
)

// After a restart, the waiters of the earlier daemon rejoin at their old
// places before new requests are queued; each ticket rejoins once, by its
// owner, and only a ticket that waited may.
func TestWaitersRejoinOnceAndFirst(t *testing.T) {
	h := newHarness(t, Config{
		TicketMark: 20, RejoinAfter: 20, Rejoinable: map[lockq.Ticket]uint32{12: 1000, 15: 1000},
		GraceUntil: t0 + Time(3*Second), RejoinUntil: t0 + Time(Minute),
	})
	h.step(Adopt{Jobs: []Adopted{{Ticket: 10, Where: "cg/x-10"}}, Now: h.now}, "watch(x-10)")
	h.acquire(1, "exclusive", "c1:queued@1") // parked, with a ticket of its own
	rejoin := func(conn ConnID, t lockq.Ticket, uid uint32, want string) {
		h.t.Helper()
		a := h.req(conn, "exclusive")
		a.Rejoin, a.UID = t, uid
		h.step(a, want)
	}
	rejoin(2, 15, 1000, "c2:queued@1")
	rejoin(3, 12, 1000, "c3:queued@1") // before 15: its old place
	// Used already, or never waiting: parked as new requests.
	rejoin(4, 12, 1000, "c4:queued@4")
	rejoin(5, 9, 1000, "c5:queued@5")
	if got := h.c.Waiters(); len(got) != 5 || got[0].Ticket != 12 || got[1].Ticket != 15 || got[2].Ticket != 21 || got[4].Ticket != 23 {
		t.Fatalf("waiters %v: want 12, 15 and the parked 21, 22, 23", got)
	}
	h.tick(3*Second, "c1:waiting@3 c4:waiting@4 c5:waiting@5 c2:waiting@2")
	h.phases("x-10:running x-12:waiting x-15:waiting x-21:waiting x-22:waiting x-23:waiting")
}

func TestARejoinOfAnotherUsersTicketOrTooLateIsANewRequest(t *testing.T) {
	h := newHarness(t, Config{TicketMark: 20, RejoinAfter: 20, Rejoinable: map[lockq.Ticket]uint32{12: 1000}, RejoinUntil: t0 + Time(Minute)})
	a := h.req(1, "exclusive")
	a.Rejoin, a.UID = 12, 1001
	h.step(a, "c1:granted") // a new request: ticket 21
	h.tick(Minute+Second, "")
	a = h.req(2, "exclusive")
	a.Rejoin = 12
	h.step(a, "c2:queued@1") // too late: a new request, 22
	h.phases("x-21:granted x-22:waiting")
}

// A request from inside a job that holds what it asks for would wait for
// itself: it is refused. One that would not wait for it is not.
func TestARequestThatWouldWaitForItsOwnJobIsRefused(t *testing.T) {
	h := freezing(t, Config{Policy: lockq.Freeze})
	h.acquire(1, "shared pls", "c1:granted")
	h.acquire(2, "exclusive res=bk", "c2:granted")
	within := func(conn ConnID, words string, in lockq.Ticket, want string) {
		h.t.Helper()
		a := h.req(conn, words)
		a.Within = in
		h.step(a, want)
	}
	within(3, "exclusive", 1, "c3:error(this request comes from inside job s-1 (shared on cpu), which holds what it asks for: it would wait for itself for ever (a pls job is frozen while an exclusive job waits or runs); run it outside that job)!")
	within(4, "exclusive res=bk", 2, "c4:error(this request comes from inside job x-2 (exclusive on bk), which holds what it asks for: it would wait for itself for ever; run it outside that job)!")
	within(5, "shared pls", 1, "c5:granted")        // pls in pls
	within(6, "exclusive res=net", 2, "c6:granted") // another lock
	h.phases("s-1:granted x-2:granted s-3:granted x-4:granted")
}

// A restarted daemon adopts a job of named locks by its process, whole:
// its locks exclude others, and its runtime limit runs from its placement.
func TestAdoptionKeepsNamedLocksAndRuntimeLimits(t *testing.T) {
	h := newHarness(t, Config{})
	rec := &Record{Mode: lockq.ExclusiveMode(), Resources: []string{"bk"}, UID: 7, User: "bob", PID: 300,
		MaxRuntime: 4 * Second, Placed: h.now - Time(Second)}
	h.step(Adopt{Jobs: []Adopted{{Ticket: 5, Process: true, Record: rec}}, Now: h.now}, "watch(x-5)")
	h.acquire(1, "exclusive res=bk nb", "c1:busy!")
	h.acquire(2, "exclusive", "c2:granted") // the machine is not its
	h.tick(2*Second, "")
	h.tick(Second, "stop(x-5)") // 4 s after its placement
	h.emptied(5, "drop(x-5) end(x-5)")
	h.acquire(3, "exclusive res=bk nb", "c3:granted")

	// The daemon's own cap applies to adopted jobs too.
	h = newHarness(t, Config{MaxExclusiveRuntime: 2 * Second})
	rec.MaxRuntime = 0
	h.step(Adopt{Jobs: []Adopted{{Ticket: 5, Process: true, Record: rec}}, Now: h.now}, "watch(x-5)")
	h.tick(Second, "stop(x-5)")
}

// A record that does not agree with what the driver found is not the
// job's: the job is adopted as its cgroup's name says.
func TestARecordThatDisagreesIsIgnored(t *testing.T) {
	h := newHarness(t, Config{})
	rec := &Record{Mode: lockq.SharedMode(), Resources: []string{"cpu"}, UID: 7, User: "bob"}
	h.step(Adopt{Jobs: []Adopted{{Ticket: 5, Where: "cg/x-5", Record: rec, UID: 8, User: "carol"}}, Now: h.now}, "watch(x-5)")
	if v := h.c.Jobs(); len(v) != 1 || v[0].Mode != lockq.ExclusiveMode() || v[0].User != "carol" {
		t.Fatalf("adopted %+v, want an exclusive job of carol", v)
	}
	named := &Record{Mode: lockq.ExclusiveMode(), Resources: []string{"bk"}, UID: 7, User: "bob"}
	h.step(Adopt{Jobs: []Adopted{{Ticket: 6, Where: "cg/x-6", Record: named}}, Now: h.now}, "watch(x-6)")
	if v := h.c.Jobs(); len(v) != 2 || v[1].Resources[0] != "cpu" {
		t.Fatalf("adopted %+v: a job with a cgroup holds the machine", v)
	}
}

// After a crash, the tickets handed out after the waiters were last saved
// may rejoin once each; older ones only if saved as waiting.
func TestTicketsNewerThanTheSavedWaitersMayRejoinOnce(t *testing.T) {
	h := newHarness(t, Config{TicketMark: 1024, RejoinAfter: 30, Rejoinable: map[lockq.Ticket]uint32{29: 1000},
		RejoinUntil: t0 + Time(Minute)})
	h.acquire(1, "exclusive", "c1:granted") // ticket 1025
	rejoin := func(conn ConnID, t lockq.Ticket, want string) {
		h.t.Helper()
		a := h.req(conn, "exclusive")
		a.Rejoin = t
		h.step(a, want)
	}
	rejoin(2, 31, "c2:queued@1")
	rejoin(3, 29, "c3:queued@1")
	rejoin(4, 31, "c4:queued@3") // again: a new request
	rejoin(5, 28, "c5:queued@4") // granted before the save: a new request
	h.phases("x-1025:granted x-29:waiting x-31:waiting x-1026:waiting x-1027:waiting")
}
