package core

import (
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/perflock/perflock/internal/jobname"
	"github.com/perflock/perflock/lockq"
)

// acquire queues a request, or answers why not.
func (c *Core) acquire(a Acquire) {
	if c.byConn[a.Conn] != nil {
		c.fail(a.Conn, Invalid, "one acquire per connection")
		return
	}
	if a.Rejoin != 0 {
		if c.mayRejoin(a) {
			delete(c.cfg.Rejoinable, a.Rejoin) // once
			c.rejoined[a.Rejoin] = true
		} else {
			// Not a ticket of this user that waited when the earlier daemon
			// stopped, or too late: a new request, at the end of the line.
			c.log(Warn, "rejoin refused: queued as a new request", "ticket", uint64(a.Rejoin), "uid", a.UID, "pid", a.PID)
			a.Rejoin = 0
		}
	}
	if a.Rejoin == 0 && c.cfg.GraceUntil != 0 && a.Now < c.cfg.GraceUntil {
		c.park(a)
		return
	}
	c.queue(a, 0)
}

// mayRejoin: a's ticket waited when the earlier daemon stopped (or was
// handed out after it last saved its waiters), is its user's, and has not
// rejoined yet.
func (c *Core) mayRejoin(a Acquire) bool {
	t := a.Rejoin
	switch {
	case a.Now > c.cfg.RejoinUntil || c.rejoined[t]:
		return false
	case t > c.cfg.RejoinAfter && t <= c.cfg.TicketMark:
		return true
	}
	uid, ok := c.cfg.Rejoinable[t]
	return ok && uid == a.UID
}

// queue makes a's job and puts it in line, at ticket t when the request
// was parked with one.
func (c *Core) queue(a Acquire, t lockq.Ticket) {
	j, ok := c.newJob(a)
	if !ok {
		return
	}
	if w := c.jobs[a.Within]; w != nil && w.phase.Holding() && overlaps(w.resources, j.resources) && !w.mode.Compatible(j.mode) {
		c.log(Info, "refused: it would wait for the job it runs in", "within", w.name, "user", j.user, "pid", j.clientPID)
		why := "this request comes from inside job " + w.name + " (" + w.mode.String() + " on " + strings.Join(w.resources, ",") +
			"), which holds what it asks for: it would wait for itself for ever"
		if w.preemptible {
			why += " (a pls job is frozen while an exclusive job waits or runs)"
		}
		c.fail(a.Conn, Unavailable, why+"; run it outside that job")
		return
	}
	if a.Rejoin == 0 && c.skip(j, a) {
		return
	}
	if a.Rejoin == 0 && j.key != "" {
		c.supersede(j, a.Replace, a.ExpireAfter, a.Now)
	}
	if t != 0 {
		a.Rejoin = t // at the ticket it was given when parked
	}
	c.enqueue(j, a, t != 0)
}

// parked is a new request held back during the rejoin grace; a blocking
// one has its ticket already, and its client has heard it (with a token,
// so that it can rejoin should the daemon restart again).
type parked struct {
	a      Acquire
	ticket lockq.Ticket
}

func (c *Core) park(a Acquire) {
	p := parked{a: a}
	if !a.Nonblock {
		p.ticket = c.q.Last() + 1
		c.q.Reserve(p.ticket)
		_, waiting := c.q.Len()
		c.reply(Reply{Conn: a.Conn, Kind: SayQueued, Ticket: p.ticket, UID: a.UID, Position: waiting + len(c.parked) + 1})
	}
	c.parked = append(c.parked, p)
}

// unpark queues the parked requests once the grace is over.
func (c *Core) unpark(now Time) {
	c.cfg.GraceUntil = 0
	parked := c.parked
	c.parked = nil
	for _, p := range parked {
		p.a.Now = now
		c.queue(p.a, p.ticket)
	}
}

// newJob checks a request and makes its job, or answers why not.
func (c *Core) newJob(a Acquire) (*job, bool) {
	mode, err := lockq.ParseMode(a.Mode)
	switch {
	case err != nil:
		c.fail(a.Conn, Invalid, err.Error())
		return nil, false
	case a.Preemptible && mode.Kind != lockq.Shared:
		c.fail(a.Conn, Invalid, "only shared jobs can be preemptible")
		return nil, false
	case a.Report && mode.Kind == lockq.Shared:
		c.fail(a.Conn, Invalid, "a run report is for exclusive and group jobs, not shared ones")
		return nil, false
	case c.waiting[a.UID] >= c.cfg.MaxWaiting && !a.Nonblock:
		c.fail(a.Conn, Limit, "user "+a.User+" already has "+strconv.Itoa(c.cfg.MaxWaiting)+" waiting requests (the limit)")
		return nil, false
	}
	j := &job{
		conn: a.Conn, uid: a.UID, user: a.User, clientPID: a.PID, clientStart: a.PIDStart, placeSelf: a.PlaceSelf, bind: a.Bind, bindGrace: a.BindGrace, mode: mode, resources: a.Resources,
		command: a.Command, since: a.Now, key: a.Key, gov: a.Governor, maxRuntime: a.MaxRuntime,
	}
	if a.Report {
		j.report = reportWanted
	}
	if a.Owner != "" && a.Bind != "" {
		j.user = a.Owner
	}
	if len(j.resources) == 0 {
		j.resources = []string{lockq.Machine}
	}
	if limit := c.cfg.MaxExclusiveRuntime; limit > 0 && !j.shared() && (j.maxRuntime <= 0 || j.maxRuntime > limit) {
		j.maxRuntime = limit
	}
	// Only the machine drives freezing: a shared holder of a named lock
	// must not be frozen, for freezing does not exclude anyone from a file.
	j.preemptible = a.Preemptible && len(j.resources) == 1 && j.resources[0] == lockq.Machine
	return j, true
}

// enqueue puts j in line (or at its old place, rejoining), or answers
// busy. heard: its client was told its ticket when it was parked.
func (c *Core) enqueue(j *job, a Acquire, heard bool) {
	r := lockq.Request{Mode: j.mode, Resources: j.resources, Preemptible: j.preemptible}
	if a.Timeout > 0 {
		r.Deadline = Add(a.Now, a.Timeout)
	}
	var t lockq.Ticket
	var acts []lockq.Action
	var err error
	switch {
	case a.Rejoin != 0:
		t = a.Rejoin
		acts, err = c.q.EnqueueAt(t, r)
	case a.Nonblock:
		t, acts, err = c.q.Try(r)
	default:
		t, acts, err = c.q.Enqueue(r)
	}
	if errors.Is(err, lockq.ErrWouldBlock) {
		c.log(Debug, "busy", "user", j.user, "pid", j.clientPID, "command", j.command)
		c.emit(Observe{What: ObserveBusy, Kind: j.mode.Kind})
		c.reply(Reply{Conn: a.Conn, Kind: SayBusy, Holders: c.holdersFor(j), Last: true})
		return
	}
	if err != nil {
		c.fail(a.Conn, Invalid, err.Error())
		return
	}
	j.ticket, j.name = t, jobname.Format(j.kind(), uint64(t))
	c.jobs[t] = j
	c.busyAdd(j)
	c.byConn[a.Conn] = j
	c.waiting[j.uid]++
	c.changed()
	if a.Rejoin != 0 && !heard {
		c.log(Info, "rejoined", "job", j.name, "user", j.user, "pid", j.clientPID)
	}
	c.apply(acts, a.Now)
	if j.phase == Waiting && c.jobs[t] == j {
		_, pos := c.q.Len()
		if e, ok := c.q.Lookup(t); ok && a.Rejoin != 0 {
			pos = e.Position
		}
		hs := c.holdersFor(j)
		j.lastPos, j.lastHold = pos, holdersKey(hs)
		say := SayQueued
		if heard {
			say = SayWaiting
		}
		c.reply(Reply{Conn: j.conn, Kind: say, Ticket: t, UID: j.uid, Position: pos, Holders: hs})
		c.log(Info, "waiting", "job", j.name, "user", j.user, "pid", j.clientPID, "mode", j.mode.String(), "position", pos)
	}
}

// skip answers "skipped" and reports true when j's key last completed
// successfully less than IfElapsed ago (--if-elapsed).
func (c *Core) skip(j *job, a Acquire) bool {
	if j.key == "" || a.IfElapsed <= 0 || a.LastSuccess == 0 {
		return false
	}
	ago := Since(a.LastSuccess, a.Now)
	if ago >= a.IfElapsed {
		return false
	}
	c.log(Info, "skipped", "key", j.key, "user", j.user, "last_success_ago", ago)
	c.reply(Reply{Conn: a.Conn, Kind: SaySkipped, Last: true,
		Text: j.key + " last completed successfully " + agoString(ago) + " ago (--if-elapsed " + durString(a.IfElapsed) + ")"})
	return true
}

// supersede makes way for j among the jobs of the same key and owner: with
// replace, every older one is cancelled or stopped (the newest instance
// wins); with expireAfter, those that have held longer are stopped.
func (c *Core) supersede(j *job, replace bool, expireAfter Duration, now Time) {
	if !replace && expireAfter <= 0 {
		return
	}
	var olds []*job
	for _, t := range sortedKeys(c.jobs) {
		if o := c.jobs[t]; o.key == j.key && o.uid == j.uid {
			olds = append(olds, o)
		}
	}
	for _, o := range olds {
		switch {
		case replace:
			c.log(Info, "replacing older job of the same key", "job", o.name, "key", j.key)
			c.emit(Observe{What: ObserveCancelled, Kind: o.mode.Kind, Reason: CancelReplace})
			c.cancelJob(o, "replaced by a newer job with key "+j.key+" (--replace)", now)
		case o.phase.Holding() && Since(o.since, now) > expireAfter:
			c.log(Info, "expiring job of the same key", "job", o.name, "key", j.key, "held", Since(o.since, now))
			c.emit(Observe{What: ObserveCancelled, Kind: o.mode.Kind, Reason: CancelExpire})
			c.cancelJob(o, "expired: held longer than "+durString(expireAfter)+" (--expire-after of a newer job with key "+j.key+")", now)
		}
	}
}

// cancelJob takes a waiting job out of line or stops a running one,
// telling its client why.
func (c *Core) cancelJob(j *job, why string, now Time) {
	notice := Reply{Conn: j.conn, Kind: SayCancelled, Job: j.name, Text: why}
	switch {
	case j.phase == Waiting:
		notice.Last = true
		c.reply(notice)
		c.leave(j, outOfLine, now)
	case j.phase >= Running:
		// Empty too: a job without a cgroup reports its place empty at
		// once, and its processes may run on.
		c.reply(notice)
		c.emit(StopJob{Ticket: j.ticket, Why: why})
	default:
		// Granted, nothing placed yet: closing its connection ends the lease.
		notice.Last = true
		c.reply(notice)
	}
}

// cancel is wholock --cancel: its owner or root only.
func (c *Core) cancel(e Cancel) {
	j := c.jobs[e.Ticket]
	if j == nil {
		c.fail(e.Conn, Invalid, "no job with ticket "+strconv.FormatUint(uint64(e.Ticket), 10)+" (wholock lists them)")
		return
	}
	if e.UID != 0 && e.UID != j.uid {
		c.log(Warn, "cancel refused", "job", j.name, "by_uid", e.UID, "owner", j.user)
		c.fail(e.Conn, Denied, "job "+j.name+" belongs to "+j.user+": only its owner or root may cancel it")
		return
	}
	c.log(Info, "cancel", "job", j.name, "by", e.User)
	c.emit(Observe{What: ObserveCancelled, Kind: j.mode.Kind, Reason: CancelUser})
	c.cancelJob(j, "cancelled by "+e.User, e.Now)
	c.reply(Reply{Conn: e.Conn, Kind: SayCancelled, Job: j.name, Last: true})
}

// closed: a connection is gone. Its request leaves the line, or its lease
// ends once its job has no process left.
func (c *Core) closed(e Closed) {
	c.parked = slices.DeleteFunc(c.parked, func(p parked) bool { return p.a.Conn == e.Conn })
	j := c.byConn[e.Conn]
	if j == nil {
		return
	}
	delete(c.byConn, e.Conn)
	j.conn = 0
	if j.phase == Waiting {
		c.log(Info, "cancelled", "job", j.name, "user", j.user, "pid", j.clientPID)
		c.emit(Observe{What: ObserveCancelled, Kind: j.mode.Kind, Reason: CancelClient})
		c.leave(j, outOfLine, e.Now)
		return
	}
	c.maybeRelease(j, e.Now)
}

// done: the client reports its job's exit status. Only the first counts.
func (c *Core) done(e Done) {
	j := c.byConn[e.Conn]
	if j == nil || !j.phase.Holding() || j.done {
		return
	}
	c.log(Info, "job ended", "job", j.name, "status", e.Status)
	j.status, j.done = e.Status, true
	if e.Status == 0 && j.key != "" {
		c.emit(Completed{UID: j.uid, Key: j.key, At: e.Now})
	}
	if j.report == reportWanted {
		j.report = reportSent
		c.emit(SendReport{Conn: e.Conn, Ticket: j.ticket, Job: j.name, FrozenJobs: j.frozenAt,
			Shielded: j.shielded, NoShield: j.noShield})
	}
}
