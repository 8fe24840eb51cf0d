package core

import "github.com/perflock/perflock/lockq"

// turn is the line of placements: at most MaxPlacing under way, those of
// exclusive and group jobs before those of shared ones, each kind in the
// order asked. A service manager starts units one at a time: with no
// bound, a burst of shared jobs (all granted together, to be frozen anyway)
// would queue their scopes ahead of an exclusive job's.
type turn struct {
	placing      int
	first, other []lockq.Ticket
}

// forget takes a leaving job out of the line.
func (t *turn) forget(tk lockq.Ticket) {
	for _, l := range []*[]lockq.Ticket{&t.first, &t.other} {
		for i, x := range *l {
			if x == tk {
				*l = append((*l)[:i], (*l)[i+1:]...)
				break
			}
		}
	}
}

// place: the client asks to place its held child.
func (c *Core) place(e Place) {
	j := c.byConn[e.Conn]
	if j == nil || j.phase != Granted {
		c.fail(e.Conn, Invalid, "place is allowed once, after granted")
		return
	}
	j.childPID = e.PID
	if j.named() {
		// Named locks only: no cgroup or scope, no pin, no turn. The lease
		// is the connection and the descriptor the job inherits.
		c.setPhase(j, Placing)
		c.emit(PlaceJob{Job: c.spec(j), PID: e.PID, ClientPID: j.clientPID, ClientStart: j.clientStart, Named: true, Report: j.report != reportNone})
		return
	}
	// The CPU frequency first (--governor), then the place: the held child
	// runs the job only after placed.
	c.pinThen(j, e.Now)
}

func (c *Core) spec(j *job) JobSpec {
	return JobSpec{Ticket: j.ticket, Name: j.name, Shared: j.shared(), User: j.user, UID: j.uid,
		Command: j.command, MaxRuntime: j.maxRuntime, Bind: j.bind, BindGrace: j.bindGrace}
}

// inTurn lines j up for its placement.
func (c *Core) inTurn(j *job) {
	c.setPhase(j, PlaceQueued)
	if j.shared() {
		c.turn.other = append(c.turn.other, j.ticket)
	} else {
		c.turn.first = append(c.turn.first, j.ticket)
	}
	c.placeNext()
}

// placeNext starts placements while fewer than MaxPlacing are under way.
func (c *Core) placeNext() {
	t := &c.turn
	for t.placing < c.cfg.MaxPlacing {
		var next lockq.Ticket
		switch {
		case len(t.first) > 0:
			next, t.first = t.first[0], t.first[1:]
		case len(t.other) > 0:
			next, t.other = t.other[0], t.other[1:]
		default:
			return
		}
		j := c.jobs[next]
		t.placing++
		c.setPhase(j, Placing)
		c.emit(PlaceJob{Job: c.spec(j), PID: j.childPID, ClientPID: j.clientPID, ClientStart: j.clientStart, Report: j.report != reportNone})
	}
}

// placeDone: the driver answered.
func (c *Core) placeDone(e PlaceDone) {
	j := c.jobs[e.Ticket]
	if j == nil || j.phase != Placing {
		return
	}
	if !j.named() {
		c.turn.placing--
		defer c.placeNext()
	}
	if e.Err != nil {
		c.log(Error, "placing job failed", "job", j.name, "pid", j.childPID, "err", e.Err)
		c.setPhase(j, Granted)
		if j.conn != 0 {
			c.fail(j.conn, Internal, "perflockd could not place the job: "+e.Err.Error())
			return
		}
		c.maybeRelease(j, e.Now)
		return
	}
	c.setPhase(j, Running)
	j.where, j.placedAt = e.Where, e.Now
	if j.maxRuntime > 0 && !e.NativeMaxRuntime {
		j.stopAt = Add(e.Now, j.maxRuntime)
		c.limits[j.ticket] = j
	}
	if j.report != reportNone {
		j.frozenAt = c.frozenShared()
	}
	j.shielded, j.noShield = c.shieldState(j)
	// A restarted daemon adopts the job whole: by its cgroup, or by its
	// process where it has none.
	c.emit(SaveRecord{Ticket: j.ticket, Record: c.record(j)})
	j.recorded = true
	c.reply(Reply{Conn: j.conn, Kind: SayPlaced, Where: e.Where})
	c.log(Info, "running", "job", j.name, "pid", j.childPID, "where", e.Where)
	c.emit(WatchEmpty{Ticket: j.ticket})
}

func (c *Core) record(j *job) Record {
	r := Record{Mode: j.mode, Resources: j.resources, Preemptible: j.preemptible, UID: j.uid,
		ClientPID: j.clientPID, PID: j.childPID, Command: j.command, Key: j.key, Governor: j.gov,
		MaxRuntime: j.maxRuntime, Placed: j.placedAt, Bind: j.bind, Owner: j.owner()}
	if j.childPID == j.clientPID {
		r.PIDStart = j.clientStart // the shell checked it when placing
	}
	return r
}

// emptied: no process of the job is left; its lease ends once its client
// is gone too.
func (c *Core) emptied(e Emptied) {
	j := c.jobs[e.Ticket]
	if j == nil || j.phase != Running {
		return
	}
	c.setPhase(j, Empty)
	c.maybeRelease(j, e.Now)
}
