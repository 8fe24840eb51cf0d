package core

import (
	"slices"
	"strings"

	"github.com/perflock/perflock/lockq"
)

// pin is the CPU frequency pin (perfrun --governor) that the holders of the
// machine share. One PinSet or PinRestore runs at a time; each result steers
// again, like the freezer. Its users are the exclusive or group jobs that
// asked for it and are being placed or run: the first one pins, the last
// one to end restores. A job that asks for another mode while the pin is in
// force is refused (a benchmark must not run at a frequency it did not ask
// for); a job without --governor runs under whatever a group it joins has
// pinned, but otherwise waits for an earlier pin to be restored.
type pin struct {
	users   map[lockq.Ticket]bool
	mode    string // what the users asked for
	cur     string // what is in force: "" when the settings are the machine's own
	busy    bool   // a PinSet or PinRestore runs
	restore bool   // the one under way is a PinRestore (of from)
	from    string
	target  string         // the PinSet under way
	stuck   bool           // the last restore failed: retried on the next event only
	left    bool           // the restore under way is of an earlier daemon's pin
	waiting []lockq.Ticket // jobs waiting for the pin (phase Preparing), in the order they asked
}

// pinThen moves j, whose client asked to place it, on to its placement once
// the CPU frequency is as it asked, or fails it when it cannot be.
func (c *Core) pinThen(j *job, now Time) {
	p := &c.pin
	if j.shared() || j.named() {
		c.inTurn(j)
		return
	}
	if j.gov == "" {
		if !p.busy && (len(p.users) > 0 && p.cur == p.mode || len(p.users) == 0 && p.cur == "") {
			c.shieldThen(j, now) // under its group's pin, or nothing pinned
			return
		}
		// A pin is being set for its group, or an earlier one restored: the
		// job starts after.
	} else {
		if len(p.users) > 0 && p.mode != j.gov {
			c.pinFailed(j, "the CPU frequency is pinned at "+p.mode+" for "+c.pinUsers()+
				" of the same group: run with --governor "+p.mode+", or none", now)
			return
		}
		p.users[j.ticket] = true
		p.mode = j.gov
	}
	c.setPhase(j, Preparing)
	p.waiting = append(p.waiting, j.ticket)
	p.stuck = false
	c.steerPin(now)
}

// pinUsers names the pin's users, for messages.
func (c *Core) pinUsers() string {
	var names []string
	for _, t := range sortedKeys(c.pin.users) {
		if j := c.jobs[t]; j != nil {
			names = append(names, j.name)
		}
	}
	return "job " + strings.Join(names, ", ")
}

// pinForget drops a leaving job from the pin: from its waiters, and from
// its users, the last of whom restores the settings.
func (c *Core) pinForget(j *job, now Time) {
	p := &c.pin
	p.waiting = slices.DeleteFunc(p.waiting, func(t lockq.Ticket) bool { return t == j.ticket })
	if !p.users[j.ticket] {
		return
	}
	delete(p.users, j.ticket)
	p.stuck = false
	c.steerPin(now)
}

// steerPin starts a PinSet or PinRestore when what is in force is not what
// the users want, and lets the waiting placements go on once it is.
func (c *Core) steerPin(now Time) {
	p := &c.pin
	if p.busy {
		return
	}
	target := ""
	if len(p.users) > 0 {
		target = p.mode
	}
	if p.cur != target && !(p.stuck && target == "") {
		p.busy = true
		p.restore, p.from, p.target = p.cur != "", p.cur, target // a different mode is restored first
		if p.restore {
			c.emit(PinRestore{})
		} else {
			c.emit(PinSet{Mode: target})
		}
		return
	}
	waiting := p.waiting
	p.waiting = nil
	for _, t := range waiting {
		j := c.jobs[t]
		switch {
		case j == nil:
		case j.gov == "" || j.gov == p.cur:
			c.shieldThen(j, now)
		default:
			c.pinFailed(j, "the CPU frequency is not at "+j.gov, now)
		}
	}
}

// pinDone takes the result of a PinSet or PinRestore.
func (c *Core) pinDone(e PinDone) {
	p := &c.pin
	if !p.busy {
		return
	}
	p.busy = false
	switch {
	case e.Err == nil && p.restore && p.left:
		p.cur, p.left = "", false
		c.log(Info, "restored the CPU frequency settings an earlier perflockd left pinned (no job of it runs)", "were", p.from)
	case e.Err == nil && p.restore:
		p.cur = ""
		c.log(Info, "CPU frequency settings restored", "were", p.from)
	case e.Err == nil:
		p.cur = p.target
		c.log(Info, "CPU frequency pinned", "governor", p.target, "for", c.pinUsers())
	default:
		why := ""
		if p.restore {
			p.stuck = true
			c.log(Error, "restoring the CPU frequency settings failed; retried when a job ends or asks for --governor", "were", p.from, "err", e.Err)
			why = "perflockd could not restore the settings of an earlier pin (" + p.from + "): " + strings.TrimPrefix(e.Err.Error(), "governor: ")
		} else {
			c.log(Error, "pinning the CPU frequency failed", "governor", p.target, "err", e.Err)
			why = "perflockd could not pin the CPU frequency: " + strings.TrimPrefix(e.Err.Error(), "governor: ")
		}
		// Every user is still waiting (none runs before the pin is in
		// force): they fail, and whoever waits for nothing goes on.
		var failed []*job
		p.waiting = slices.DeleteFunc(p.waiting, func(t lockq.Ticket) bool {
			if j := c.jobs[t]; j != nil && j.gov != "" {
				delete(p.users, t)
				failed = append(failed, j)
				return true
			}
			return false
		})
		for _, j := range failed {
			c.pinFailed(j, why, e.Now)
		}
	}
	c.steerPin(e.Now)
}

// pinFailed: the CPU frequency could not be as j asked; the job does not run.
func (c *Core) pinFailed(j *job, why string, now Time) {
	c.log(Warn, "job not started: CPU frequency not pinned", "job", j.name, "governor", j.gov, "err", why)
	c.setPhase(j, Granted)
	if j.conn != 0 {
		c.fail(j.conn, Unavailable, "--governor "+j.gov+": the job did not run: "+why)
		return
	}
	c.maybeRelease(j, now)
}

// adoptPin settles the pin an earlier perflockd may have left: kept while
// an adopted exclusive or group job that asked for it runs (any of them,
// when no record says), until the last of them ends; restored at once
// otherwise.
func (c *Core) adoptPin(left PinLeft, holders []*job, now Time) {
	var asked []*job
	for _, j := range holders {
		if j.gov != "" {
			asked = append(asked, j)
		}
	}
	if len(asked) > 0 {
		holders = asked
	}
	switch {
	case left.Err != nil:
		c.log(Error, "the CPU frequency state file of an earlier perflockd cannot be read; check the settings, then remove it", "err", left.Err)
	case !left.Found:
	case len(holders) > 0:
		p := &c.pin
		p.mode, p.cur = left.Mode, left.Mode
		var names []string
		for _, j := range holders {
			p.users[j.ticket] = true
			j.gov = left.Mode
			names = append(names, j.name)
		}
		c.log(Info, "kept the CPU frequency pinned for adopted jobs; restored when they end", "governor", left.Mode, "jobs", strings.Join(names, ","))
	default:
		c.pin.cur, c.pin.left = left.Mode, true
		c.steerPin(now)
	}
}
