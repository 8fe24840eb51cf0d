package core

import (
	"slices"

	"github.com/perflock/perflock/lockq"
)

// shield confines everything on the machine but its exclusive (or group)
// jobs to the housekeeping CPUs while one runs (perflockd --shield). Its
// users are the exclusive and group jobs of the machine from their
// preparation to the end of their lease: the first raises it, the last
// lowers it. One SetShield runs at a time; each result steers again. A
// shield that cannot be raised lets its jobs run unshielded (their reports
// say why) rather than keep the machine from everybody; one that cannot be
// lowered is tried again every ThawRetry.
type shield struct {
	users   map[lockq.Ticket]bool
	up      bool // raised, as the last SetShield done said
	busy    bool
	target  bool
	failed  string         // why the last raise failed; cleared when the users are gone
	retryAt Time           // a failed lower is tried again then
	waiting []lockq.Ticket // jobs waiting for it (phase Preparing), in order
}

// ShieldLeft is what a shield state file an earlier daemon left says.
type ShieldLeft struct {
	Found bool
	Err   error // the file could not be read
}

// shieldThen moves j on to its placement once the shield is up (or cannot
// be raised).
func (c *Core) shieldThen(j *job, now Time) {
	s := &c.shd
	if !c.cfg.Shield || j.shared() || j.named() {
		c.inTurn(j)
		return
	}
	s.users[j.ticket] = true
	if s.up && !s.busy {
		c.inTurn(j)
		return
	}
	c.setPhase(j, Preparing)
	s.waiting = append(s.waiting, j.ticket)
	c.steerShield(now)
}

// steerShield raises or lowers the shield to what its users want, and lets
// the jobs waiting for it go on once it is as they need.
func (c *Core) steerShield(now Time) {
	s := &c.shd
	if s.busy || s.retryAt != 0 {
		return
	}
	want := len(s.users) > 0
	if !want {
		s.failed = ""
	}
	if want != s.up && (s.failed == "" || !want) {
		s.busy, s.target = true, want
		c.emit(SetShield{On: want})
		return
	}
	waiting := s.waiting
	s.waiting = nil
	for _, t := range waiting {
		if j := c.jobs[t]; j != nil {
			c.inTurn(j)
		}
	}
}

func (c *Core) shieldDone(e ShieldDone) {
	s := &c.shd
	if !s.busy {
		return
	}
	s.busy = false
	switch {
	case e.Err == nil:
		s.up = s.target
		c.changed()
		if s.up {
			c.log(Info, "shield raised: other work confined to the housekeeping CPUs")
		} else {
			c.log(Info, "shield lowered: every CPU given back")
		}
	case s.target:
		s.failed = e.Err.Error()
		c.log(Error, "raising the shield failed; the jobs run unshielded", "err", e.Err)
	default:
		c.log(Error, "lowering the shield failed; tried again", "err", e.Err)
		s.retryAt = Add(e.Now, c.cfg.ThawRetry)
		return
	}
	c.steerShield(e.Now)
}

// shieldForget drops a leaving job from the shield.
func (c *Core) shieldForget(j *job, now Time) {
	s := &c.shd
	s.waiting = slices.DeleteFunc(s.waiting, func(t lockq.Ticket) bool { return t == j.ticket })
	if s.users[j.ticket] {
		delete(s.users, j.ticket)
		c.steerShield(now)
	}
}

// shieldState is what a job's run report says of the shield: whether the
// job ran shielded, or why not ("" when the daemon has no shield).
func (c *Core) shieldState(j *job) (shielded bool, why string) {
	s := &c.shd
	switch {
	case !c.cfg.Shield:
		return false, ""
	case j.named():
		return false, "a job without the cpu resource is not shielded"
	case s.users[j.ticket] && s.up:
		return true, ""
	case s.failed != "":
		return false, s.failed
	}
	return false, "the shield was not up when the job was placed"
}

// adoptShield settles a shield an earlier daemon left raised: kept for
// the adopted exclusive or group jobs, until the last of them ends;
// lowered at once otherwise.
func (c *Core) adoptShield(left ShieldLeft, holders []*job, now Time) {
	s := &c.shd
	switch {
	case left.Err != nil:
		c.log(Error, "the shield state file of an earlier perflockd cannot be read; check the CPUs the units and IRQs may use, then remove it", "err", left.Err)
		return
	case !left.Found:
		return
	}
	s.up = true
	for _, j := range holders {
		if !j.named() {
			s.users[j.ticket] = true
		}
	}
	if len(s.users) > 0 {
		c.log(Info, "kept the shield an earlier perflockd raised, for its adopted jobs; lowered when they end")
	}
	c.steerShield(now)
}
