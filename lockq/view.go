package lockq

import "slices"

// SuspendState is where a holder stands in the suspension cycle.
type SuspendState uint8

const (
	NotSuspended SuspendState = iota
	// Suspending: Suspend was asked and not yet confirmed.
	Suspending
	// IsSuspended: the caller confirmed the suspension.
	IsSuspended
)

func (s SuspendState) String() string {
	switch s {
	case Suspending:
		return "suspending"
	case IsSuspended:
		return "suspended"
	}
	return "running"
}

// Entry describes one request for listing.
type Entry struct {
	Ticket      Ticket
	Mode        Mode
	Resources   []string
	Preemptible bool
	Deadline    Time
	Owner       any
	// Holding is true for holders, false for waiters.
	Holding bool
	// Suspend is a holder's suspension state.
	Suspend SuspendState
	// Preempting: a waiter for which suspensions were asked.
	Preempting bool
	// Position is a waiter's place in the global line, from 1; 0 for holders.
	Position int
}

func (c *req) entry(pos int) Entry {
	e := Entry{
		Ticket:      c.ticket,
		Mode:        c.Mode,
		Resources:   slices.Clone(c.Resources),
		Preemptible: c.Preemptible,
		Deadline:    c.Deadline,
		Owner:       c.Owner,
		Holding:     c.holding,
		Preempting:  c.pending,
		Position:    pos,
	}
	if c.holding {
		e.Suspend = SuspendState(c.hs)
	}
	return e
}

// View lists holders in ticket order, then waiters in ticket order with
// their positions. It costs O(holders·log(holders) + waiters).
func (q *Queue) View() []Entry {
	out := q.appendHolders(make([]Entry, 0, len(q.reqs)))
	pos := 0
	for c := q.whead; c != nil; c = c.next {
		pos++
		out = append(out, c.entry(pos))
	}
	return out
}

// Holders lists the holders in ticket order, in O(holders·log(holders)),
// however many requests wait.
func (q *Queue) Holders() []Entry {
	return q.appendHolders(nil)
}

func (q *Queue) appendHolders(out []Entry) []Entry {
	holders := make([]*req, 0, len(q.reqs)-q.nwaiting)
	for _, c := range q.holding {
		holders = append(holders, c)
	}
	slices.SortFunc(holders, func(a, b *req) int { return cmpTicket(a.ticket, b.ticket) })
	for _, c := range holders {
		out = append(out, c.entry(0))
	}
	return out
}

// Lookup describes one request. For a waiter it walks the line to find its
// position: O(position).
func (q *Queue) Lookup(t Ticket) (Entry, bool) {
	c, ok := q.reqs[t]
	if !ok {
		return Entry{}, false
	}
	pos := 0
	if !c.holding {
		for w := q.whead; w != nil; w = w.next {
			pos++
			if w == c {
				break
			}
		}
	}
	return c.entry(pos), true
}
