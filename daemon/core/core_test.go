package core

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/perflock/perflock/lockq"
)

// The core is pure: nothing it links reads a clock, a file or a socket.
func TestCoreLinksNoOperatingSystem(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		switch p {
		case "net", "os", "os/exec", "syscall", "golang.org/x/sys/unix", "time":
			t.Errorf("the core depends on %s", p)
		}
	}
}

func TestALeaseEndsWhenTheClientIsGoneAndTheJobEmpty(t *testing.T) {
	h := newHarness(t, Config{})
	h.acquire(1, "exclusive", "c1:granted")
	h.acquire(2, "exclusive", "c2:queued@1")
	h.place(1, "place(x-1)")
	h.placed(1, "save(x-1) c1:placed watch(x-1)")
	h.step(Done{Conn: 1, Status: 0, Now: h.now}, "")
	h.closed(1, "") // a killed client: the job still runs
	h.phases("x-1:running x-2:waiting")
	h.emptied(1, "drop(x-1) end(x-1) c2:granted")
	h.place(2, "place(x-2)")
	h.placed(2, "save(x-2) c2:placed watch(x-2)")
	h.emptied(2, "") // the job ended; its client is still reading
	h.closed(2, "drop(x-2) end(x-2)")
	h.phases("")
}

// A client that asks to be placed itself (PlaceSelf) is placed as soon as
// it is granted, with no place message: at once when the machine is free,
// and at the grant when it waited.
func TestAClientThatPlacesItselfIsPlacedOnGrant(t *testing.T) {
	h := newHarness(t, Config{})
	a := h.req(1, "exclusive self")
	effs := h.c.Step(a)
	if got := h.show(effs); got != "c1:granted place(x-1)" {
		t.Fatalf("effects %q, want the grant and the placement together", got)
	}
	var pj PlaceJob
	for _, e := range effs {
		if p, ok := e.(PlaceJob); ok {
			pj = p
		}
	}
	if pj.PID != a.PID || pj.ClientPID != a.PID || pj.ClientStart != a.PIDStart {
		t.Fatalf("placing pid %d (client %d, start %d), want the client itself: %d started at %d",
			pj.PID, pj.ClientPID, pj.ClientStart, a.PID, a.PIDStart)
	}
	h.learnNames()
	h.check()
	h.acquire(2, "exclusive self", "c2:queued@1")
	h.place(1, "c1:error(place is allowed once, after granted)!")
	h.placed(1, "save(x-1) c1:placed watch(x-1)")
	h.phases("x-1:running x-2:waiting")
	h.closed(1, "")
	h.emptied(1, "drop(x-1) end(x-1) c2:granted place(x-2)")
	h.placed(2, "save(x-2) c2:placed watch(x-2)")
}

func TestSharedJobsAreFrozenForAnExclusiveOneAndThawedAfter(t *testing.T) {
	h := freezing(t, Config{Policy: lockq.Freeze})
	h.acquire(1, "shared pls", "c1:granted")
	h.place(1, "place(s-1)")
	h.placed(1, "save(s-1) c1:placed watch(s-1)")
	h.acquire(2, "exclusive", "freeze c2:queued@1")
	h.acquire(3, "shared pls", "c3:queued@2") // no barging past the exclusive one
	h.froze("c1:frozen c2:granted")
	h.phases("s-1:running* x-2:granted s-3:waiting")
	h.closed(2, "c3:granted thaw")
	h.froze("c1:thawed")
}

func TestAFailedFreezeFallsBackToDraining(t *testing.T) {
	h := freezing(t, Config{Policy: lockq.Freeze})
	h.acquire(1, "shared pls", "c1:granted")
	h.place(1, "place(s-1)")
	h.placed(1, "save(s-1) c1:placed watch(s-1)")
	h.acquire(2, "exclusive", "freeze c2:queued@1")
	h.step(FreezerDone{Err: errors.New("the service manager said no"), Now: h.now}, "")
	h.acquire(3, "shared pls", "c3:queued@2")
	h.phases("s-1:running x-2:waiting s-3:waiting")
	h.closed(1, "")
	h.emptied(1, "drop(s-1) end(s-1) c2:granted")
	h.closed(2, "c3:granted")
}

func TestAFailedThawIsRetried(t *testing.T) {
	h := freezing(t, Config{Policy: lockq.Freeze})
	h.acquire(1, "shared pls", "c1:granted")
	h.acquire(2, "exclusive", "freeze c2:queued@1")
	h.froze("c1:frozen c2:granted")
	h.closed(2, "thaw")
	h.step(FreezerDone{Err: errors.New("busy"), Now: h.now}, "")
	if at, ok := h.c.NextWake(); !ok || at != h.now+Time(Second) {
		t.Fatalf("next wake %v %v, want the retry in a second", at, ok)
	}
	h.tick(Second, "thaw")
	h.froze("c1:thawed")
}

// A burst of shared jobs is placed two at a time, and an exclusive job
// granted meanwhile is placed before the shared jobs still waiting to be.
func TestExclusivePlacementGoesBeforeWaitingSharedOnes(t *testing.T) {
	h := freezing(t, Config{Policy: lockq.Freeze})
	for c := ConnID(1); c <= 3; c++ {
		h.acquire(c, "shared pls", h.show([]Effect{Reply{Conn: c, Kind: SayGranted}}))
	}
	h.place(1, "place(s-1)")
	h.place(2, "place(s-2)")
	h.place(3, "")
	h.acquire(4, "exclusive", "freeze c4:queued@1")
	h.froze("c1:frozen c2:frozen c3:frozen c4:granted")
	h.place(4, "")
	h.phases("s-1:placing* s-2:placing* s-3:place-queued* x-4:place-queued")
	h.placed(1, "save(s-1) c1:placed watch(s-1) place(x-4)")
	h.placed(2, "save(s-2) c2:placed watch(s-2) place(s-3)")
}

// Members of a group share one CPU pin: the first pins, the last to end
// restores, and a member asking for another frequency is refused.
func TestAGroupSharesOneCPUPin(t *testing.T) {
	h := newHarness(t, Config{})
	h.acquire(1, "group(7) gov=performance", "c1:granted")
	h.acquire(2, "group(7) gov=performance", "c2:granted")
	h.acquire(3, "group(7) gov=70%", "c3:granted")
	h.acquire(4, "group(7)", "c4:granted")
	h.place(1, "pin(performance)")
	h.place(2, "")
	h.place(3, "c3:error(--governor 70%: the job did not run: the CPU frequency is pinned at performance for job x-1, x-2 of the same group: run with --governor performance, or none)!")
	h.place(4, "") // no --governor: it waits for its group's pin
	h.closed(3, "")
	h.step(PinDone{Now: h.now}, "place(x-1) place(x-2)")
	h.phases("x-1:placing x-2:placing x-4:place-queued")
	h.placed(1, "save(x-1) c1:placed watch(x-1) place(x-4)")
	h.placed(2, "save(x-2) c2:placed watch(x-2)")
	h.closed(1, "")
	h.emptied(1, "drop(x-1) end(x-1)")
	h.closed(2, "")
	h.emptied(2, "drop(x-2) end(x-2) unpin")
	h.step(PinDone{Now: h.now}, "")
	h.acquire(5, "exclusive", "c5:queued@1") // x-4 holds the machine still
}

// A failed pin fails those who asked for it; a job that asked for nothing
// goes on once no pin is in force.
func TestAFailedPinFailsOnlyItsUsers(t *testing.T) {
	h := newHarness(t, Config{})
	h.acquire(1, "group(7) gov=performance", "c1:granted")
	h.acquire(2, "group(7)", "c2:granted")
	h.place(1, "pin(performance)")
	h.place(2, "")
	h.step(PinDone{Err: errors.New("governor: read-only"), Now: h.now},
		"c1:error(--governor performance: the job did not run: perflockd could not pin the CPU frequency: read-only)! place(x-2)")
}

func TestAdoptionKeepsSharedJobsFrozenWhateverTheOrder(t *testing.T) {
	s3 := Adopted{Ticket: 3, Shared: true, Where: "cg/s-3"}
	x4 := Adopted{Ticket: 4, Where: "cg/x-4"}
	for _, order := range [][]Adopted{{s3, x4}, {x4, s3}} {
		h := newHarness(t, Config{Policy: lockq.Freeze, CanFreeze: true})
		h.step(Adopt{Jobs: order, Now: h.now}, "freeze watch(x-4) watch(s-3)")
		h.froze("")
		h.phases("s-3:running* x-4:running")
		h.acquire(1, "shared pls", "c1:queued@1")
		h.emptied(4, "end(x-4) c1:granted thaw")
		h.froze("")
	}
}

func TestAdoptedJobsKeepTheirPinOrRestoreIt(t *testing.T) {
	rec := &Record{Mode: lockq.GroupMode(3), Resources: []string{"cpu"}, UID: 7, User: "bob", Governor: "performance"}
	h := newHarness(t, Config{})
	h.step(Adopt{Jobs: []Adopted{{Ticket: 9, Record: rec}}, Pin: PinLeft{Found: true, Mode: "performance"}, Now: h.now}, "watch(x-9)")
	h.acquire(1, "group(3) gov=70%", "c1:granted")
	h.place(1, "c1:error(--governor 70%: the job did not run: the CPU frequency is pinned at performance for job x-9 of the same group: run with --governor performance, or none)!")
	h.closed(1, "")
	h.emptied(9, "drop(x-9) end(x-9) unpin")

	h = newHarness(t, Config{})
	h.step(Adopt{Pin: PinLeft{Found: true, Mode: "70%"}, Now: h.now}, "unpin")
	h.acquire(1, "exclusive", "c1:granted")
	h.place(1, "") // after the restore
	h.step(PinDone{Now: h.now}, "place(x-1)")
}

// A huge runtime limit or timeout means "never", not a wrap into the past;
// the daemon's cap still applies.
func TestHugeDurationsSaturate(t *testing.T) {
	h := newHarness(t, Config{MaxExclusiveRuntime: 3 * Second})
	a := h.req(1, "exclusive")
	a.MaxRuntime = Duration(1<<63 - 1)
	h.step(a, "c1:granted")
	b := h.req(2, "exclusive")
	b.Timeout = Duration(1<<63 - 1)
	h.step(b, "c2:queued@1")
	h.place(1, "place(x-1)")
	h.placed(1, "save(x-1) c1:placed watch(x-1)")
	h.tick(2*Second, "")
	h.tick(Second, "stop(x-1)")
	h.tick(1000*Hour, "") // x-2 waits on
	h.phases("x-1:running x-2:waiting")
}

// A lease bound to a scheduler's cgroup is placed there on grant, with no
// place message; its client may leave at once (a Slurm Prolog exits), and
// the lease ends when the cgroup is empty. Listings show its owner.
func TestALeaseBoundToACgroupOutlivesItsClient(t *testing.T) {
	h := newHarness(t, Config{})
	h.acquire(1, "exclusive", "c1:granted")
	h.acquire(2, "exclusive bind=/slurm/job_42 owner=ana uid=0", "c2:queued@1")
	h.closed(1, "c2:granted bind(x-2,/slurm/job_42)")
	if v := h.c.Jobs(); len(v) != 1 || v[0].User != "ana" || v[0].UID != 0 {
		t.Fatalf("listing %+v, want x-2 shown as ana's", v)
	}
	h.placed(2, "save(x-2) c2:placed watch(x-2)")
	h.closed(2, "") // the Prolog exits; the Slurm job runs on
	h.phases("x-2:running")
	h.acquire(3, "exclusive", "c3:queued@1")
	h.emptied(2, "drop(x-2) end(x-2) c3:granted")
}

// A local exclusive or group job of the machine, waiting or holding, makes
// the machine busy for a cluster scheduler, once, until none is left;
// shared jobs, named locks and bound leases do not.
func TestTheMachineIsBusyWhileALocalExclusiveJobWaitsOrRuns(t *testing.T) {
	h := newHarness(t, Config{TellBusy: true})
	h.acquire(1, "exclusive bind=/slurm/job_7 owner=ana uid=0", "c1:granted bind(x-1,/slurm/job_7)")
	h.placed(1, "save(x-1) c1:placed watch(x-1)")
	h.acquire(2, "shared", "c2:queued@1")
	h.acquire(3, "exclusive res=gpu0", "c3:granted")
	h.acquire(4, "exclusive", "c4:queued@2 busy(perflock: exclusive job x-4 of alice: job 4)")
	h.acquire(5, "group(3)", "c5:queued@3")
	h.closed(4, "")
	h.closed(1, "")
	h.emptied(1, "drop(x-1) end(x-1) c2:granted")
	h.closed(5, "idle")
	h.acquire(6, "exclusive", "c6:queued@1 busy(perflock: exclusive job x-6 of alice: job 6)")
	h.closed(2, "c6:granted")
	h.closed(6, "idle")
}
