package lockq

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// model is what the test itself knows of every ticket, from the actions it
// has seen, independent of the queue's internals.
type model struct {
	q        *Queue
	now      Time
	waiting  map[Ticket]Request
	holding  map[Ticket]Request
	granted  map[Ticket]bool // ever granted
	gone     map[Ticket]bool // cancelled, released or expired
	suspends map[Ticket]bool // asked to suspend, not yet confirmed or resumed
}

func newModel(p Policy) *model {
	return &model{
		q: New(p), now: 0,
		waiting: map[Ticket]Request{}, holding: map[Ticket]Request{},
		granted: map[Ticket]bool{}, gone: map[Ticket]bool{}, suspends: map[Ticket]bool{},
	}
}

var resourceNames = []string{"cpu", "net", "disk"}

func genRequest(t *rapid.T) Request {
	var r Request
	switch rapid.IntRange(0, 3).Draw(t, "mode") {
	case 0:
		r.Mode = ExclusiveMode()
	case 1:
		r.Mode = SharedMode()
		r.Preemptible = rapid.Bool().Draw(t, "preemptible")
	case 2:
		r.Mode = SharedMode()
		r.Preemptible = true
	default:
		r.Mode = GroupMode(rapid.Uint32Range(1, 2).Draw(t, "group"))
	}
	n := rapid.IntRange(1, 3).Draw(t, "nres")
	perm := rapid.Permutation(resourceNames).Draw(t, "res")
	r.Resources = perm[:n]
	if rapid.IntRange(0, 3).Draw(t, "hasDeadline") == 0 {
		r.Deadline = Time(time.Duration(rapid.IntRange(1, 50).Draw(t, "deadline")) * time.Second)
	}
	return r
}

// apply records the actions of one event and checks them against the model.
func (m *model) apply(t *rapid.T, acts []Action) {
	for _, a := range acts {
		switch a.Kind {
		case Grant:
			r, ok := m.waiting[a.Ticket]
			if !ok || m.granted[a.Ticket] {
				t.Fatalf("grant of %d, which is not waiting (granted before: %v)", a.Ticket, m.granted[a.Ticket])
			}
			delete(m.waiting, a.Ticket)
			m.holding[a.Ticket] = r
			m.granted[a.Ticket] = true
			m.checkGrantOrder(t, a.Ticket, r)
		case Expire:
			r, ok := m.waiting[a.Ticket]
			if !ok || r.Deadline == 0 || r.Deadline > m.now {
				t.Fatalf("expire of %d: waiting %v, deadline %v, now %v", a.Ticket, ok, r.Deadline, m.now)
			}
			delete(m.waiting, a.Ticket)
			m.gone[a.Ticket] = true
		case Suspend:
			r, ok := m.holding[a.Ticket]
			if !ok || !r.Preemptible || m.q.policy != Freeze {
				t.Fatalf("suspend of %d: holding %v, request %+v", a.Ticket, ok, r)
			}
			m.suspends[a.Ticket] = true
		case Resume:
			if _, ok := m.holding[a.Ticket]; !ok {
				t.Fatalf("resume of %d, not holding", a.Ticket)
			}
			delete(m.suspends, a.Ticket)
		}
	}
}

// checkGrantOrder: no grant past an earlier, conflicting waiter, except the
// group jump (the grantee's group holds every resource it names).
func (m *model) checkGrantOrder(t *rapid.T, tk Ticket, r Request) {
	for wt, w := range m.waiting {
		if wt > tk || !conflicts(w, r) {
			continue
		}
		if r.Mode.Kind == Group && m.groupHoldsAll(r, tk) {
			continue
		}
		t.Fatalf("grant of %d (%v on %v) past earlier waiter %d (%v on %v)", tk, r.Mode, r.Resources, wt, w.Mode, w.Resources)
	}
}

func (m *model) groupHoldsAll(r Request, self Ticket) bool {
	for _, name := range r.Resources {
		held := false
		for ht, h := range m.holding {
			if ht != self && h.Mode == r.Mode && slices.Contains(h.Resources, name) {
				held = true
			}
		}
		if !held {
			return false
		}
	}
	return true
}

func conflicts(a, b Request) bool {
	if a.Mode.Compatible(b.Mode) {
		return false
	}
	for _, n := range a.Resources {
		if slices.Contains(b.Resources, n) {
			return true
		}
	}
	return false
}

// check compares the queue's view with the model and checks the invariants
// that must hold between events.
func (m *model) check(t *rapid.T) {
	v := m.q.View()
	hold, wait := m.q.Len()
	if hold != len(m.holding) || wait != len(m.waiting) || len(v) != hold+wait {
		t.Fatalf("queue has %d holding, %d waiting, %d in view; model %d, %d", hold, wait, len(v), len(m.holding), len(m.waiting))
	}
	var holders, waiters []Entry
	lastPos := 0
	for _, e := range v {
		if e.Holding {
			if _, ok := m.holding[e.Ticket]; !ok {
				t.Fatalf("view holder %d unknown to model", e.Ticket)
			}
			if (e.Suspend == Suspending) != m.suspends[e.Ticket] {
				t.Fatalf("holder %d suspend state %v, model asked=%v", e.Ticket, e.Suspend, m.suspends[e.Ticket])
			}
			holders = append(holders, e)
		} else {
			if _, ok := m.waiting[e.Ticket]; !ok {
				t.Fatalf("view waiter %d unknown to model", e.Ticket)
			}
			if e.Position != lastPos+1 {
				t.Fatalf("waiter %d position %d after %d", e.Ticket, e.Position, lastPos)
			}
			lastPos = e.Position
			waiters = append(waiters, e)
		}
	}
	req := func(e Entry) Request { return Request{Mode: e.Mode, Resources: e.Resources} }
	// Safety: running (not confirmed suspended) holders are pairwise compatible;
	// suspended ones are preemptible shared holders.
	for i, a := range holders {
		if a.Suspend != NotSuspended && !(a.Preemptible && a.Mode.Kind == Shared) {
			t.Fatalf("holder %d suspended but not preemptible shared", a.Ticket)
		}
		for _, b := range holders[i+1:] {
			if a.Suspend != IsSuspended && b.Suspend != IsSuspended && conflicts(req(a), req(b)) {
				t.Fatalf("incompatible holders %d (%v) and %d (%v) on %v / %v", a.Ticket, a.Mode, b.Ticket, b.Mode, a.Resources, b.Resources)
			}
		}
	}
	// Liveness: no waiter that the rules would grant is left waiting.
	for i, w := range waiters {
		blocked := w.Preempting
		for _, e := range waiters[:i] {
			blocked = blocked || conflicts(req(e), req(w))
		}
		for _, h := range holders {
			if conflicts(req(h), req(w)) && !(h.Suspend == IsSuspended && w.Mode.excludesShared()) {
				blocked = true
			}
		}
		if !blocked {
			t.Fatalf("waiter %d (%v on %v) could be granted but waits; view %+v", w.Ticket, w.Mode, w.Resources, v)
		}
	}
	// Suspensions last exactly as long as something needs them.
	for _, h := range holders {
		if h.Suspend == NotSuspended {
			continue
		}
		needed := false
		for _, o := range v {
			if o.Mode.excludesShared() && (o.Holding || o.Preempting) && conflicts(req(o), req(h)) {
				needed = true
			}
		}
		if !needed {
			t.Fatalf("holder %d stays %v though nothing needs it", h.Ticket, h.Suspend)
		}
	}
}

func (m *model) live(t *rapid.T, from map[Ticket]Request, label string) (Ticket, bool) {
	if len(from) == 0 {
		return 0, false
	}
	keys := make([]Ticket, 0, len(from))
	for k := range from {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return rapid.SampledFrom(keys).Draw(t, label), true
}

func (m *model) step(t *rapid.T) {
	switch rapid.IntRange(0, 9).Draw(t, "op") {
	case 0, 1, 2:
		r := genRequest(t)
		tk, acts, err := m.q.Enqueue(r)
		if err != nil {
			t.Fatal(err)
		}
		m.waiting[tk] = r
		m.apply(t, acts)
	case 3:
		r := genRequest(t)
		before := fmt.Sprint(m.q.View())
		tk, acts, err := m.q.Try(r)
		if errors.Is(err, ErrWouldBlock) {
			if after := fmt.Sprint(m.q.View()); after != before {
				t.Fatalf("failed Try changed the queue")
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		m.waiting[tk] = r
		m.apply(t, acts)
		if !m.granted[tk] {
			e, _ := m.q.Lookup(tk)
			if !e.Preempting {
				t.Fatalf("Try accepted %d, which neither holds nor preempts", tk)
			}
		}
	case 4:
		if tk, ok := m.live(t, m.holding, "release"); ok {
			acts, err := m.q.Release(tk)
			if err != nil {
				t.Fatal(err)
			}
			delete(m.holding, tk)
			delete(m.suspends, tk)
			m.gone[tk] = true
			m.apply(t, acts)
		}
	case 5:
		if tk, ok := m.live(t, m.waiting, "cancel"); ok {
			acts, err := m.q.Cancel(tk)
			if err != nil {
				t.Fatal(err)
			}
			delete(m.waiting, tk)
			m.gone[tk] = true
			m.apply(t, acts)
			if _, ok := m.q.Lookup(tk); ok {
				t.Fatalf("cancelled %d still listed", tk)
			}
		}
	case 6, 7:
		susp := map[Ticket]Request{}
		for tk := range m.suspends {
			susp[tk] = m.holding[tk]
		}
		if tk, ok := m.live(t, susp, "confirm"); ok {
			fail := rapid.IntRange(0, 9).Draw(t, "fail") == 0
			var acts []Action
			var err error
			if fail {
				acts, err = m.q.SuspendFailed(tk)
				r := m.holding[tk]
				r.Preemptible = false
				m.holding[tk] = r
			} else {
				acts, err = m.q.Suspended(tk)
			}
			if err != nil {
				t.Fatal(err)
			}
			delete(m.suspends, tk)
			m.apply(t, acts)
		}
	case 9:
		// A request that left rejoins with its old ticket (after a restart).
		gone := map[Ticket]Request{}
		for tk := range m.gone {
			gone[tk] = Request{}
		}
		if tk, ok := m.live(t, gone, "rejoin"); ok {
			r := genRequest(t)
			r.Deadline = 0
			acts, err := m.q.EnqueueAt(tk, r)
			if err != nil {
				t.Fatal(err)
			}
			delete(m.gone, tk)
			delete(m.granted, tk)
			m.waiting[tk] = r
			m.apply(t, acts)
		}
	case 8:
		m.now += Time(time.Duration(rapid.IntRange(1, 10).Draw(t, "advance")) * time.Second)
		m.apply(t, m.q.Expire(m.now))
	}
}

// drain ends every job, confirming suspensions, until nothing is left: with
// finite holds every request is eventually granted.
func (m *model) drain(t *rapid.T) {
	for round := 0; len(m.waiting)+len(m.holding) > 0; round++ {
		if round > 10000 {
			t.Fatalf("queue does not drain: %d waiting, %d holding", len(m.waiting), len(m.holding))
		}
		for tk := range m.suspends {
			acts, err := m.q.Suspended(tk)
			if err != nil {
				t.Fatal(err)
			}
			delete(m.suspends, tk)
			m.apply(t, acts)
		}
		for tk := range m.holding {
			acts, err := m.q.Release(tk)
			if err != nil {
				t.Fatal(err)
			}
			delete(m.holding, tk)
			delete(m.suspends, tk)
			m.apply(t, acts)
			break
		}
		m.check(t)
	}
	for tk := range m.waiting {
		t.Fatalf("request %d never granted", tk)
	}
	if len(m.q.resources) != 0 || len(m.q.groups) != 0 || len(m.q.deadlines) != 0 {
		t.Fatalf("empty queue keeps state: %d resources, %d groups, %d deadlines", len(m.q.resources), len(m.q.groups), len(m.q.deadlines))
	}
}

func TestPropertiesRandomEventSequences(t *testing.T) {
	for _, p := range []Policy{Freeze, Drain} {
		t.Run(p.String(), func(t *testing.T) {
			rapid.Check(t, func(t *rapid.T) {
				m := newModel(p)
				steps := rapid.IntRange(1, 200).Draw(t, "steps")
				for range steps {
					m.step(t)
					m.check(t)
				}
				m.drain(t)
			})
		})
	}
}
