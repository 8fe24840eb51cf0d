package core

import (
	"slices"

	"github.com/perflock/perflock/internal/jobname"
	"github.com/perflock/perflock/lockq"
)

// Phase is where a job is in its life (see the package documentation).
type Phase uint8

// The phases, in the order a job goes through them.
const (
	Waiting Phase = iota
	Granted
	Preparing
	PlaceQueued
	Placing
	Running
	Empty
)

var phaseNames = [...]string{"waiting", "granted", "preparing", "place-queued", "placing", "running", "empty"}

func (p Phase) String() string {
	if int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return "invalid"
}

// Holding reports whether a job in phase p holds its resources.
func (p Phase) Holding() bool { return p != Waiting }

// report is where a job's run report stands.
type report uint8

const (
	reportNone   report = iota // none asked for
	reportWanted               // asked for, not sent
	reportSent
)

// job is one request and, once granted, its lease.
type job struct {
	ticket      lockq.Ticket
	name        string
	phase       Phase
	conn        ConnID // 0 once the client is gone
	uid         uint32
	user        string
	clientPID   int
	clientStart uint64 // with clientPID, the client process (Acquire.PIDStart)
	placeSelf   bool   // placed itself once granted (Acquire.PlaceSelf)
	bind        string // the cgroup its lease is bound to (Acquire.Bind), if any
	bindGrace   Duration
	childPID    int
	mode        lockq.Mode
	resources   []string
	preemptible bool
	command     []string
	key         string
	gov         string // --governor, "" for none
	maxRuntime  Duration
	since       Time // when it started waiting, then holding
	placedAt    Time
	stopAt      Time // when the core stops it (max runtime), 0 if never
	where       string
	recorded    bool // it has a record to drop
	heardFrozen bool // its client was told it is frozen, and not yet thawed
	report      report
	frozenAt    int    // shared jobs frozen when it was placed, for its report
	shielded    bool   // it was placed under the shield
	noShield    string // else why not, for its report
	status      int    // the status its client reported with done
	done        bool
	// What its waiting client last heard.
	lastPos  int
	lastHold string
}

func (j *job) shared() bool { return j.mode.Kind == lockq.Shared }

// owner is the user shown for a job bound to a scheduler's cgroup, "" for
// any other job.
func (j *job) owner() string {
	if j.bind == "" {
		return ""
	}
	return j.user
}

// named: the job holds named locks only, not the machine: no cgroup, no
// freezing, no pin.
func (j *job) named() bool { return !slices.Contains(j.resources, lockq.Machine) }

func (j *job) kind() jobname.Kind {
	if j.shared() {
		return jobname.Shared
	}
	return jobname.Exclusive
}

// result classifies how j ended, for the metrics.
func (j *job) result() string {
	switch {
	case !j.done:
		return ResultUnknown
	case j.status == 0:
		return ResultSuccess
	case j.status >= 128:
		return ResultSignal
	}
	return ResultFailure
}

// setPhase moves j to p, keeping the per-user count of waiting jobs.
func (c *Core) setPhase(j *job, p Phase) {
	if j.phase == Waiting && p != Waiting {
		c.unwait(j.uid)
	}
	j.phase = p
	c.changed()
}

func (c *Core) unwait(uid uint32) {
	if c.waiting[uid]--; c.waiting[uid] <= 0 {
		delete(c.waiting, uid)
	}
}

// how a job leaves.
type leaving uint8

const (
	outOfLine leaving = iota // a waiter cancelled or gone
	expired                  // a waiter whose timeout passed (the queue removed it)
	released                 // a holder whose lease ended
)

// leave is the one place where a job leaves: out of the queue, the maps,
// the pin, the placement line, its record and its place.
func (c *Core) leave(j *job, how leaving, now Time) {
	var acts []lockq.Action
	var err error
	switch how {
	case outOfLine:
		acts, err = c.q.Cancel(j.ticket)
	case released:
		acts, err = c.q.Release(j.ticket)
	}
	if err != nil {
		c.log(Error, "the queue does not know the job", "job", j.name, "err", err)
	}
	if j.phase == Waiting {
		c.unwait(j.uid)
	}
	delete(c.jobs, j.ticket)
	delete(c.limits, j.ticket)
	delete(c.busy.jobs, j.ticket)
	if c.byConn[j.conn] == j {
		delete(c.byConn, j.conn)
	}
	c.turn.forget(j.ticket)
	if j.recorded {
		c.emit(DropRecord{Ticket: j.ticket})
	}
	if j.phase >= Running {
		c.emit(EndLease{Ticket: j.ticket})
	}
	c.pinForget(j, now)
	c.shieldForget(j, now)
	if how == released {
		c.log(Info, "released", "job", j.name, "held", Since(j.since, now))
		c.emit(Observe{What: ObserveExited, Kind: j.mode.Kind, Result: j.result()})
	}
	c.changed()
	c.apply(acts, now)
}

// maybeRelease ends j's lease once its client is gone and, if it was
// placed, its place is empty. A placement under way decides when it ends.
func (c *Core) maybeRelease(j *job, now Time) {
	if j.conn != 0 || c.jobs[j.ticket] != j {
		return
	}
	switch j.phase {
	case Granted, Preparing, PlaceQueued, Empty:
		c.leave(j, released, now)
	}
}

// apply carries out the queue's actions, in order, then steers the freezer.
func (c *Core) apply(acts []lockq.Action, now Time) {
	for _, a := range acts {
		j := c.jobs[a.Ticket]
		if j == nil {
			continue
		}
		switch a.Kind {
		case lockq.Grant:
			c.setPhase(j, Granted)
			c.emit(Observe{What: ObserveGranted, Kind: j.mode.Kind, Waited: Since(j.since, now)})
			j.since = now
			c.reply(Reply{Conn: j.conn, Kind: SayGranted, Ticket: j.ticket, Job: j.name})
			c.log(Info, "granted", "job", j.name, "user", j.user, "pid", j.clientPID, "mode", j.mode.String())
			switch {
			case j.conn == 0:
			case j.placeSelf:
				c.place(Place{Conn: j.conn, PID: j.clientPID, Now: now})
			case j.bind != "":
				c.place(Place{Conn: j.conn, Now: now}) // no process: the bound cgroup
			}
		case lockq.Expire:
			c.reply(Reply{Conn: j.conn, Kind: SayExpired, Last: true})
			c.log(Info, "timed out", "job", j.name, "user", j.user, "pid", j.clientPID)
			c.emit(Observe{What: ObserveTimedOut, Kind: j.mode.Kind})
			c.leave(j, expired, now)
		case lockq.Suspend, lockq.Resume:
			// The queue's suspension states are the record; the freezer
			// steers towards them below.
		}
	}
	if len(acts) > 0 {
		c.changed()
	}
	c.steerFreezer(now)
}
