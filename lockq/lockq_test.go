package lockq

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// harness drives a queue with named requests and checks actions as strings
// like "grant(C)".
type harness struct {
	t     *testing.T
	q     *Queue
	byNm  map[string]Ticket
	names map[Ticket]string
}

func newHarness(t *testing.T, p Policy) *harness {
	return &harness{t: t, q: New(p), byNm: map[string]Ticket{}, names: map[Ticket]string{}}
}

func (h *harness) show(acts []Action) string {
	s := make([]string, len(acts))
	for i, a := range acts {
		s[i] = fmt.Sprintf("%v(%s)", a.Kind, h.names[a.Ticket])
	}
	return strings.Join(s, " ")
}

func (h *harness) want(step string, acts []Action, want string) {
	h.t.Helper()
	if got := h.show(acts); got != want {
		h.t.Fatalf("%s: actions %q, want %q", step, got, want)
	}
}

func (h *harness) enq(name string, r Request, want string) {
	h.t.Helper()
	r.Owner = name
	tk, acts, err := h.q.Enqueue(r)
	if err != nil {
		h.t.Fatalf("enqueue %s: %v", name, err)
	}
	h.byNm[name], h.names[tk] = tk, name
	h.want("enqueue "+name, acts, want)
}

func (h *harness) try(name string, r Request, want string) error {
	h.t.Helper()
	r.Owner = name
	tk, acts, err := h.q.Try(r)
	if err == nil {
		h.byNm[name], h.names[tk] = tk, name
		h.want("try "+name, acts, want)
	}
	return err
}

func (h *harness) do(step string, f func(Ticket) ([]Action, error), name, want string) {
	h.t.Helper()
	acts, err := f(h.byNm[name])
	if err != nil {
		h.t.Fatalf("%s %s: %v", step, name, err)
	}
	h.want(step+" "+name, acts, want)
}

func (h *harness) release(name, want string) { h.t.Helper(); h.do("release", h.q.Release, name, want) }
func (h *harness) cancel(name, want string)  { h.t.Helper(); h.do("cancel", h.q.Cancel, name, want) }
func (h *harness) frozen(name, want string) {
	h.t.Helper()
	h.do("suspended", h.q.Suspended, name, want)
}
func (h *harness) failed(name, want string) {
	h.t.Helper()
	h.do("suspend failed", h.q.SuspendFailed, name, want)
}

// state lists the queue as "A B | C D" (holders | waiters), with "*" after a
// suspended holder and "~" after one still suspending.
func (h *harness) state(want string) {
	h.t.Helper()
	var hold, wait []string
	for _, e := range h.q.View() {
		n := e.Owner.(string)
		if e.Holding {
			switch e.Suspend {
			case IsSuspended:
				n += "*"
			case Suspending:
				n += "~"
			}
			hold = append(hold, n)
		} else {
			wait = append(wait, n)
		}
	}
	if got := strings.TrimSpace(strings.Join(hold, " ") + " | " + strings.Join(wait, " ")); got != want {
		h.t.Fatalf("state %q, want %q", got, want)
	}
}

var (
	x  = Request{Mode: ExclusiveMode()}
	s  = Request{Mode: SharedMode()}
	ps = Request{Mode: SharedMode(), Preemptible: true}
)

func on(r Request, res ...string) Request { r.Resources = res; return r }
func grp(id uint32, res ...string) Request {
	return Request{Mode: GroupMode(id), Resources: res}
}

// The essay's example: a shared request that arrives after a waiting
// exclusive one waits until the exclusive one has held and released.
func TestSharedWaitsBehindQueuedExclusive(t *testing.T) {
	for _, p := range []Policy{Freeze, Drain} {
		t.Run(p.String(), func(t *testing.T) {
			h := newHarness(t, p)
			h.enq("A", s, "grant(A)")
			h.enq("B", s, "grant(B)")
			h.enq("C", x, "")
			h.release("A", "")
			h.enq("D", s, "")
			h.state("B | C D")
			h.release("B", "grant(C)")
			h.state("C | D")
			h.release("C", "grant(D)")
			h.state("D |")
		})
	}
}

func TestExclusiveRequestsAreGrantedInArrivalOrder(t *testing.T) {
	h := newHarness(t, Freeze)
	h.enq("A", x, "grant(A)")
	h.enq("B", x, "")
	h.enq("C", x, "")
	h.enq("D", x, "")
	h.cancel("C", "")
	h.release("A", "grant(B)")
	h.release("B", "grant(D)")
	h.state("D |")
}

func TestSharedRequestsHoldTogetherAndAreGrantedAsARun(t *testing.T) {
	h := newHarness(t, Drain)
	h.enq("X", x, "grant(X)")
	h.enq("A", s, "")
	h.enq("B", s, "")
	h.enq("Y", x, "")
	h.enq("C", s, "")
	h.release("X", "grant(A) grant(B)")
	h.state("A B | Y C")
	h.release("A", "")
	h.release("B", "grant(Y)")
	h.release("Y", "grant(C)")
}

func TestMultiResourceRequestIsGrantedAllAtOnce(t *testing.T) {
	h := newHarness(t, Freeze)
	h.enq("A", on(x, "a"), "grant(A)")
	h.enq("AB", on(x, "a", "b"), "")
	// b is free, but an earlier waiter wants it: no barging.
	h.enq("B", on(x, "b"), "")
	h.enq("C", on(x, "c"), "grant(C)")
	h.state("A C | AB B")
	h.release("A", "grant(AB)")
	h.release("AB", "grant(B)")
}

func TestMultiResourceRequestsInOppositeOrderDoNotDeadlock(t *testing.T) {
	h := newHarness(t, Freeze)
	h.enq("H", on(x, "a"), "grant(H)")
	h.enq("AB", on(x, "a", "b"), "")
	h.enq("BA", on(x, "b", "a"), "")
	h.release("H", "grant(AB)")
	h.release("AB", "grant(BA)")
}

func TestSharedOnOneResourceDoesNotWaitForAnother(t *testing.T) {
	h := newHarness(t, Drain)
	h.enq("S1", on(s, "a", "b"), "grant(S1)")
	h.enq("XB", on(x, "b"), "")
	// On a, the only earlier waiter is none: compatible with holder S1.
	h.enq("S2", on(s, "a"), "grant(S2)")
	// On b, S3 must queue behind XB.
	h.enq("S3", on(s, "a", "b"), "")
	h.release("S1", "grant(XB)")
	h.release("XB", "grant(S3)")
}

func TestWaiterBlockedElsewhereDoesNotBlockCompatibleLaterWaiter(t *testing.T) {
	// A later shared waiter is compatible with an earlier shared waiter, so it
	// may go first when the earlier one is held up on another resource.
	h := newHarness(t, Drain)
	h.enq("XB", on(x, "b"), "grant(XB)")
	h.enq("XA", on(x, "a"), "grant(XA)")
	h.enq("S1", on(s, "a", "b"), "")
	h.enq("S2", on(s, "a"), "")
	h.release("XA", "grant(S2)")
	h.state("XB S2 | S1")
	h.release("XB", "grant(S1)")
}

func TestGroupMembersHoldTogetherAndExcludeOthers(t *testing.T) {
	h := newHarness(t, Drain)
	h.enq("G1", grp(7), "grant(G1)")
	h.enq("G2", grp(7), "grant(G2)")
	h.enq("H1", grp(8), "")
	h.enq("S", s, "")
	h.enq("X", x, "")
	h.release("G1", "")
	h.release("G2", "grant(H1)")
	h.release("H1", "grant(S)")
	h.release("S", "grant(X)")
}

func TestGroupRequestJumpsAheadWhenItsGroupHolds(t *testing.T) {
	h := newHarness(t, Drain)
	h.enq("G1", grp(7), "grant(G1)")
	h.enq("X", x, "")
	h.enq("G2", grp(7), "grant(G2)")
	h.state("G1 G2 | X")
	h.release("G1", "")
	h.release("G2", "grant(X)")
}

func TestGroupRequestDoesNotJumpWhenGroupHoldsOnlySomeResources(t *testing.T) {
	h := newHarness(t, Drain)
	h.enq("G1", grp(7, "a"), "grant(G1)")
	h.enq("X", on(x, "a"), "")
	h.enq("G2", grp(7, "a", "b"), "")
	h.release("G1", "grant(X)")
	h.release("X", "grant(G2)")
}

func TestGroupWaitersJumpWhenTheirGroupIsGranted(t *testing.T) {
	h := newHarness(t, Drain)
	h.enq("X", x, "grant(X)")
	h.enq("G1", grp(7), "")
	h.enq("S", s, "")
	h.enq("G2", grp(7), "")
	h.release("X", "grant(G1) grant(G2)")
	h.state("G1 G2 | S")
}

func TestFreezeSuspendsPreemptibleHoldersThenGrantsExclusive(t *testing.T) {
	h := newHarness(t, Freeze)
	h.enq("P1", ps, "grant(P1)")
	h.enq("P2", ps, "grant(P2)")
	h.enq("X", x, "suspend(P1) suspend(P2)")
	h.enq("P3", ps, "")
	h.state("P1~ P2~ | X P3")
	h.frozen("P1", "")
	h.frozen("P2", "grant(X)")
	h.state("P1* P2* X | P3")
	h.release("X", "resume(P1) resume(P2) grant(P3)")
	h.state("P1 P2 P3 |")
}

func TestFreezeKeepsHoldersSuspendedWhileExclusiveRequestsFollow(t *testing.T) {
	h := newHarness(t, Freeze)
	h.enq("P", ps, "grant(P)")
	h.enq("X1", x, "suspend(P)")
	h.enq("X2", x, "")
	h.frozen("P", "grant(X1)")
	h.release("X1", "grant(X2)")
	h.state("P* X2 |")
	h.release("X2", "resume(P)")
}

func TestGroupRequestPreemptsLikeExclusive(t *testing.T) {
	h := newHarness(t, Freeze)
	h.enq("P", ps, "grant(P)")
	h.enq("G1", grp(3), "suspend(P)")
	h.enq("G2", grp(3), "")
	h.frozen("P", "grant(G1) grant(G2)")
	h.enq("G3", grp(3), "grant(G3)")
	h.release("G1", "")
	h.release("G2", "")
	h.release("G3", "resume(P)")
}

func TestFreezeWaitsForNonPreemptibleHolders(t *testing.T) {
	h := newHarness(t, Freeze)
	h.enq("P", ps, "grant(P)")
	h.enq("S", s, "grant(S)")
	h.enq("X", x, "")
	h.release("S", "suspend(P)")
	h.frozen("P", "grant(X)")
}

func TestCancellingAPreemptingRequestResumesHolders(t *testing.T) {
	h := newHarness(t, Freeze)
	h.enq("P", ps, "grant(P)")
	h.enq("X", x, "suspend(P)")
	h.cancel("X", "resume(P)")
	// A late confirmation of the old suspension changes nothing.
	h.frozen("P", "")
	h.state("P |")
}

func TestSuspendFailureFallsBackToDraining(t *testing.T) {
	h := newHarness(t, Freeze)
	h.enq("P1", ps, "grant(P1)")
	h.enq("P2", ps, "grant(P2)")
	h.enq("X", x, "suspend(P1) suspend(P2)")
	h.frozen("P1", "")
	h.failed("P2", "resume(P1)")
	h.state("P1 P2 | X")
	h.release("P2", "suspend(P1)")
	h.frozen("P1", "grant(X)")
}

func TestResumeComesBeforeGrantOfSharedWaiter(t *testing.T) {
	h := newHarness(t, Freeze)
	h.enq("P", ps, "grant(P)")
	h.enq("X", x, "suspend(P)")
	h.frozen("P", "grant(X)")
	h.enq("S", s, "")
	h.release("X", "resume(P) grant(S)")
}

func TestSuspendedHolderMayEndWhileSuspended(t *testing.T) {
	h := newHarness(t, Freeze)
	h.enq("P", ps, "grant(P)")
	h.enq("X", x, "suspend(P)")
	h.release("P", "grant(X)")
	h.release("X", "")
	h.state("|")
	if hold, wait := h.q.Len(); hold+wait != 0 || len(h.q.resources) != 0 {
		t.Fatalf("queue not empty: %d holding, %d waiting, %d resources", hold, wait, len(h.q.resources))
	}
}

func TestDrainNeverSuspendsAndLaterSharedWaitBehindExclusive(t *testing.T) {
	h := newHarness(t, Drain)
	h.enq("P", ps, "grant(P)")
	h.enq("X", x, "")
	h.enq("Q", ps, "")
	h.failed("P", "") // meaningless under drain: changes nothing
	h.release("P", "grant(X)")
	h.release("X", "grant(Q)")
}

func TestPreemptionOnlyTouchesHoldersInTheWay(t *testing.T) {
	h := newHarness(t, Freeze)
	h.enq("PA", on(ps, "a"), "grant(PA)")
	h.enq("PB", on(ps, "b"), "grant(PB)")
	h.enq("XA", on(x, "a"), "suspend(PA)")
	h.frozen("PA", "grant(XA)")
	h.state("PA* PB XA |")
}

func TestTryFailsAndLeavesTheQueueUntouched(t *testing.T) {
	h := newHarness(t, Freeze)
	h.enq("X", x, "grant(X)")
	before := h.q.View()
	if err := h.try("S", s, ""); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("try behind a holder: %v, want ErrWouldBlock", err)
	}
	if after := h.q.View(); len(after) != len(before) {
		t.Fatalf("view changed: %v -> %v", before, after)
	}
	h.enq("Y", x, "")
	if h.byNm["Y"] != 2 {
		t.Fatalf("failed try used a ticket: Y got %d", h.byNm["Y"])
	}
	// No barging: a shared try behind a waiting exclusive fails too.
	h.release("X", "grant(Y)")
	h.release("Y", "")
	h.enq("S1", s, "grant(S1)")
	h.enq("X2", x, "")
	if err := h.try("S2", s, ""); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("try behind a waiter: %v, want ErrWouldBlock", err)
	}
}

func TestTrySucceedsWhenFreeOrWhenOnlySuspensionsAreNeeded(t *testing.T) {
	h := newHarness(t, Freeze)
	if err := h.try("S", s, "grant(S)"); err != nil {
		t.Fatal(err)
	}
	h.release("S", "")
	h.enq("P", ps, "grant(P)")
	if err := h.try("X", x, "suspend(P)"); err != nil {
		t.Fatalf("try exclusive with only a preemptible holder: %v", err)
	}
	hd := newHarness(t, Drain)
	hd.enq("P", ps, "grant(P)")
	if err := hd.try("X", x, ""); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("try under drain: %v, want ErrWouldBlock", err)
	}
	hg := newHarness(t, Drain)
	hg.enq("G1", grp(1), "grant(G1)")
	hg.enq("X", x, "")
	if err := hg.try("G2", grp(1), "grant(G2)"); err != nil {
		t.Fatalf("try of a jumping group member: %v", err)
	}
}

func TestCancelAndReleaseErrors(t *testing.T) {
	h := newHarness(t, Freeze)
	h.enq("X", x, "grant(X)")
	h.enq("Y", x, "")
	if _, err := h.q.Release(h.byNm["Y"]); !errors.Is(err, ErrNotHolding) {
		t.Fatalf("release of a waiter: %v", err)
	}
	for _, f := range []func(Ticket) ([]Action, error){h.q.Release, h.q.Cancel, h.q.Suspended, h.q.SuspendFailed} {
		if _, err := f(99); !errors.Is(err, ErrUnknownTicket) {
			t.Fatalf("unknown ticket: %v", err)
		}
	}
	h.cancel("X", "grant(Y)") // cancelling a holder releases it
	if _, ok := h.q.Lookup(h.byNm["X"]); ok {
		t.Fatal("cancelled request still listed")
	}
}

func TestInvalidRequestsAreRefused(t *testing.T) {
	q := New(Freeze)
	for _, r := range []Request{
		{},
		{Mode: Mode{Kind: 9}},
		{Mode: ExclusiveMode(), Resources: []string{""}},
		{Mode: SharedMode(), Resources: []string{"a", "b", "a"}},
		{Mode: ExclusiveMode(), Preemptible: true},
		{Mode: GroupMode(1), Preemptible: true},
	} {
		if _, _, err := q.Enqueue(r); !errors.Is(err, ErrInvalid) {
			t.Errorf("Enqueue(%+v): %v, want ErrInvalid", r, err)
		}
		if _, _, err := q.Try(r); !errors.Is(err, ErrInvalid) {
			t.Errorf("Try(%+v): %v, want ErrInvalid", r, err)
		}
	}
	if hold, wait := q.Len(); hold+wait != 0 {
		t.Fatal("invalid requests changed the queue")
	}
}

func TestDeadlinesExpireWaitersInOrderAndLetOthersIn(t *testing.T) {
	h := newHarness(t, Drain)
	t0 := Time(1000 * time.Second)
	at := func(r Request, d time.Duration) Request { r.Deadline = t0 + Time(d); return r }
	h.enq("S1", s, "grant(S1)")
	h.enq("X1", at(x, 3*time.Second), "")
	h.enq("X2", at(x, time.Second), "")
	h.enq("S2", at(s, 5*time.Second), "")
	if d, ok := h.q.NextDeadline(); !ok || d != t0+Time(time.Second) {
		t.Fatalf("next deadline %v %v", d, ok)
	}
	h.want("expire at 0.5s", h.q.Expire(t0+Time(500*time.Millisecond)), "")
	h.want("expire at 3s", h.q.Expire(t0+Time(3*time.Second)), "expire(X2) expire(X1) grant(S2)")
	if _, ok := h.q.NextDeadline(); ok {
		t.Fatal("a granted request kept its deadline")
	}
	h.state("S1 S2 |")
}

func TestCancelledWaiterLeavesNoDeadline(t *testing.T) {
	h := newHarness(t, Drain)
	h.enq("X", x, "grant(X)")
	h.enq("Y", Request{Mode: ExclusiveMode(), Deadline: Time(5 * time.Second)}, "")
	h.cancel("Y", "")
	if _, ok := h.q.NextDeadline(); ok {
		t.Fatal("cancelled request kept its deadline")
	}
}

func TestViewListsHoldersThenWaitersWithPositions(t *testing.T) {
	h := newHarness(t, Freeze)
	h.enq("P", ps, "grant(P)")
	h.enq("X", on(x, "cpu", "net"), "suspend(P)")
	h.enq("S", s, "")
	v := h.q.View()
	if len(v) != 3 {
		t.Fatalf("view has %d entries", len(v))
	}
	want := []struct {
		owner   string
		holding bool
		pos     int
		susp    SuspendState
		pre     bool
		res     []string
	}{
		{"P", true, 0, Suspending, false, []string{Machine}},
		{"X", false, 1, NotSuspended, true, []string{"cpu", "net"}},
		{"S", false, 2, NotSuspended, false, []string{Machine}},
	}
	for i, w := range want {
		e := v[i]
		if e.Owner != w.owner || e.Holding != w.holding || e.Position != w.pos || e.Suspend != w.susp ||
			e.Preempting != w.pre || !slices.Equal(e.Resources, w.res) {
			t.Errorf("entry %d = %+v, want %+v", i, e, w)
		}
	}
	if e, ok := h.q.Lookup(h.byNm["S"]); !ok || e.Position != 2 {
		t.Fatalf("lookup S: %+v %v", e, ok)
	}
	// The view is a copy.
	v[1].Resources[0] = "changed"
	if e, _ := h.q.Lookup(h.byNm["X"]); e.Resources[0] != "cpu" {
		t.Fatal("view shares memory with the queue")
	}
}

func TestModeCompatibilityAndNames(t *testing.T) {
	modes := []Mode{ExclusiveMode(), SharedMode(), GroupMode(1), GroupMode(2)}
	compat := [][]bool{
		{false, false, false, false},
		{false, true, false, false},
		{false, false, true, false},
		{false, false, false, true},
	}
	for i, a := range modes {
		for j, b := range modes {
			if a.Compatible(b) != compat[i][j] {
				t.Errorf("%v.Compatible(%v) = %v", a, b, a.Compatible(b))
			}
		}
		m, err := ParseMode(a.String())
		if err != nil || m != a {
			t.Errorf("ParseMode(%q) = %v, %v", a.String(), m, err)
		}
	}
	for _, bad := range []string{"", "group()", "group(-1)", "group(4294967296)", "excl", "group(1"} {
		if _, err := ParseMode(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseMode(%q): %v", bad, err)
		}
	}
	if (Mode{}).String() != "invalid" || Policy(1).String() != "drain" || ActionKind(0).String() != "invalid" ||
		SuspendState(0).String() != "running" || (Action{Grant, 3}).String() != "grant(3)" {
		t.Error("names")
	}
}

func TestHoldersListsOnlyHoldersInTicketOrder(t *testing.T) {
	h := newHarness(t, Drain)
	h.enq("A", s, "grant(A)")
	h.enq("X", x, "")
	h.enq("B", on(s, "net"), "grant(B)")
	var got []string
	for _, e := range h.q.Holders() {
		got = append(got, e.Owner.(string))
	}
	if strings.Join(got, " ") != "A B" {
		t.Fatalf("holders %v", got)
	}
	h.release("A", "grant(X)")
	if hs := h.q.Holders(); len(hs) != 2 || hs[0].Owner != "X" {
		t.Fatalf("holders after release: %+v", hs)
	}
}

func TestAdoptedHoldersBlockLaterRequestsAndTicketsContinue(t *testing.T) {
	h := newHarness(t, Freeze)
	acts, err := h.q.Adopt(40, Request{Mode: ExclusiveMode(), Owner: "X"}, false)
	if err != nil || len(acts) != 0 {
		t.Fatalf("adopt: %v %v", acts, err)
	}
	h.names[40] = "X"
	if _, err := h.q.Adopt(7, Request{Mode: SharedMode(), Preemptible: true, Owner: "P"}, true); err != nil {
		t.Fatal(err)
	}
	h.names[7] = "P"
	h.byNm["X"], h.byNm["P"] = 40, 7
	h.state("P* X |")
	h.enq("S", ps, "")
	if h.byNm["S"] != 41 {
		t.Fatalf("first new ticket %d, want 41", h.byNm["S"])
	}
	// The suspended holder is resumed once the exclusive one ends.
	h.release("X", "resume(P) grant(S)")
	for _, bad := range []struct {
		t    Ticket
		r    Request
		susp bool
	}{
		{7, Request{Mode: SharedMode()}, false},                           // in use
		{0, Request{Mode: SharedMode()}, false},                           // no ticket
		{50, Request{Mode: ExclusiveMode()}, true},                        // only preemptible shared suspend
		{51, Request{Mode: SharedMode(), Resources: []string{""}}, false}, // invalid
	} {
		if _, err := h.q.Adopt(bad.t, bad.r, bad.susp); !errors.Is(err, ErrInvalid) {
			t.Errorf("Adopt(%d, %+v, %v): %v", bad.t, bad.r, bad.susp, err)
		}
	}
}

func TestRejoiningWaiterKeepsItsPlaceInLine(t *testing.T) {
	h := newHarness(t, Drain)
	h.q.Reserve(100)
	h.enq("X", x, "grant(X)") // 101
	h.enq("A", x, "")         // 102
	h.enq("G", grp(1), "")    // 103
	h.enq("B", x, "")         // 104
	// A waiter from before a restart rejoins with ticket 50: ahead of A and B.
	acts, err := h.q.EnqueueAt(50, Request{Mode: ExclusiveMode(), Owner: "OLD"})
	if err != nil || len(acts) != 0 {
		t.Fatalf("rejoin: %v %v", acts, err)
	}
	h.names[50], h.byNm["OLD"] = "OLD", 50
	acts, err = h.q.EnqueueAt(60, Request{Mode: GroupMode(1), Owner: "G0"})
	if err != nil || len(acts) != 0 {
		t.Fatalf("rejoin: %v %v", acts, err)
	}
	h.names[60], h.byNm["G0"] = "G0", 60
	h.state("X | OLD G0 A G B")
	if e, _ := h.q.Lookup(102); e.Position != 3 {
		t.Fatalf("A's position %d, want 3", e.Position)
	}
	h.release("X", "grant(OLD)")
	h.release("OLD", "grant(G0) grant(G)") // G joins its holding group
	h.release("G0", "")
	h.release("G", "grant(A)")
	h.release("A", "grant(B)")
	for _, tk := range []Ticket{0, 104, 500} {
		if _, err := h.q.EnqueueAt(tk, Request{Mode: SharedMode()}); !errors.Is(err, ErrInvalid) {
			t.Errorf("EnqueueAt(%d): %v", tk, err)
		}
	}
	// A rejoining request that can go at once is granted.
	h.release("B", "")
	acts, err = h.q.EnqueueAt(70, Request{Mode: SharedMode(), Owner: "S"})
	h.names[70] = "S"
	if err != nil {
		t.Fatal(err)
	}
	h.want("rejoin on a free machine", acts, "grant(S)")
}
