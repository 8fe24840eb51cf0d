package core

import "github.com/perflock/perflock/lockq"

// freezer is the shared side as the driver last confirmed it. What the
// queue wants is lockq's: whether any holder is suspending or suspended.
type freezer struct {
	frozen  bool // the last freeze or thaw done: frozen
	known   bool // a freeze or thaw has been done (or adopted)
	busy    bool // a SetFrozen is under way
	target  bool // what the SetFrozen under way sets
	retryAt Time // a failed thaw is tried again then
}

// wantFrozen: the queue has asked for a suspension it has not taken back.
func (c *Core) wantFrozen() bool {
	for _, e := range c.q.Holders() {
		if e.Suspend != lockq.NotSuspended {
			return true
		}
	}
	return false
}

// steerFreezer starts a freeze or thaw when the shared side is not what
// the queue wants. One runs at a time; each result steers again.
func (c *Core) steerFreezer(now Time) {
	f := &c.frz
	if f.busy || !c.cfg.CanFreeze || f.retryAt != 0 {
		return
	}
	want := c.wantFrozen()
	if f.known && want == f.frozen {
		if f.frozen {
			c.confirmFrozen(now)
		}
		return
	}
	f.busy, f.target = true, want
	c.emit(SetFrozen{Frozen: want})
}

func (c *Core) freezerDone(e FreezerDone) {
	f := &c.frz
	if !f.busy {
		return
	}
	f.busy = false
	frozen := f.target
	what := "thaw"
	if frozen {
		what = "freeze"
	}
	if e.Err != nil {
		c.log(Error, "freezer failed", "op", what, "err", e.Err)
		if !frozen {
			// The shared jobs stay frozen until a thaw works.
			f.retryAt = Add(e.Now, c.cfg.ThawRetry)
			return
		}
		// Whoever waited for the freeze waits for the shared jobs to end.
		var acts []lockq.Action
		for _, h := range c.q.Holders() {
			if h.Suspend == lockq.Suspending {
				a, _ := c.q.SuspendFailed(h.Ticket)
				acts = append(acts, a...)
			}
		}
		c.changed()
		c.apply(acts, e.Now)
		return
	}
	f.frozen, f.known = frozen, true
	if frozen {
		c.log(Info, "shared jobs frozen")
	} else {
		c.log(Info, "shared jobs thawed")
		c.thawed()
	}
	c.steerFreezer(e.Now)
}

// thawed tells the clients of frozen jobs that theirs run again: the
// shared side is thawed as a whole.
func (c *Core) thawed() {
	for _, t := range sortedKeys(c.jobs) {
		if j := c.jobs[t]; j.heardFrozen {
			j.heardFrozen = false
			c.reply(Reply{Conn: j.conn, Kind: SayThawed})
		}
	}
}

// confirmFrozen reports every suspension asked for as done: the shared side
// is frozen as a whole.
func (c *Core) confirmFrozen(now Time) {
	var acts []lockq.Action
	confirmed := false
	for _, h := range c.q.Holders() {
		if h.Suspend != lockq.Suspending {
			continue
		}
		confirmed = true
		if j := c.jobs[h.Ticket]; j != nil && !j.heardFrozen {
			j.heardFrozen = true
			c.reply(Reply{Conn: j.conn, Kind: SayFrozen})
		}
		a, _ := c.q.Suspended(h.Ticket)
		acts = append(acts, a...)
	}
	if confirmed {
		c.changed()
		c.apply(acts, now)
	}
}

// frozenShared counts the shared holders whose freeze is confirmed.
func (c *Core) frozenShared() int {
	n := 0
	for _, h := range c.q.Holders() {
		if h.Suspend == lockq.IsSuspended && h.Mode.Kind == lockq.Shared {
			n++
		}
	}
	return n
}
