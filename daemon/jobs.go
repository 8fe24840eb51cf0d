package daemon

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"

	sdnotify "github.com/coreos/go-systemd/v22/daemon"

	"github.com/perflock/perflock/governor"
	"github.com/perflock/perflock/lockq"
	"github.com/perflock/perflock/proto"
)

var pidSelf = os.Getpid()

type jobState uint8

const (
	stateWaiting jobState = iota
	stateGranted          // holds; no process placed yet
	statePlacing          // the driver is placing the job's process
	stateRunning          // placed
)

// job is one request and, once granted, its lease. Loop-owned.
type job struct {
	ticket     lockq.Ticket
	name       string
	conn       *conn // nil once the client's connection is gone
	uid        uint32
	user       string
	clientPID  int
	childPID   int
	mode       lockq.Mode
	resources  []string
	shared     bool
	command    []string
	maxRuntime time.Duration
	key        string        // --key, "" if none
	gov        governor.Mode // --governor: the CPU frequency pinned while it runs
	// preemptible: the queue may freeze it; recorded: it has a job record.
	preemptible, recorded bool
	state                 jobState
	since                 time.Time // when it started waiting, then holding
	place                 Placement
	empty                 bool // the placement has no process left
	frozen                bool // told the client it is frozen
	stopWatch             context.CancelFunc
	lastPos               int
	lastHold              string
	status                int        // the exit status its client reported with done
	reported              bool       // done was received
	report                bool       // a run report was asked for
	runStart              *runSample // the report's figures at placement
	frozenAt              int        // shared jobs frozen at placement, for the report
	reportSent            bool       // the report was sent
}

func (j *job) holding() bool { return j.state != stateWaiting }

func (s *server) userName(uid uint32) string {
	if n, ok := s.users[uid]; ok {
		return n
	}
	n := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(n); err == nil {
		n = u.Username
	}
	s.users[uid] = n
	return n
}

func (s *server) acquire(c *conn, m proto.Msg) {
	if c.gone {
		return // parked, and the client left meanwhile
	}
	if c.job != nil {
		c.fail(proto.CodeInvalid, "one acquire per connection")
		return
	}
	rejoin := m.Ticket != 0
	if rejoin && (time.Since(s.start) > rejoinWindow || !s.state.canRejoin(lockq.Ticket(m.Ticket), c.cred.Uid, m.Token)) {
		c.fail(proto.CodeInvalid, "cannot rejoin with ticket %d: not a ticket of this user from before perflockd restarted, or too late", m.Ticket)
		return
	}
	if !rejoin && time.Now().Before(s.graceUntil) {
		s.parked = append(s.parked, func() { s.acquire(c, m) })
		return
	}
	mode, err := lockq.ParseMode(m.Mode)
	if err != nil {
		c.fail(proto.CodeInvalid, "%v", err)
		return
	}
	if m.Preemptible && mode.Kind != lockq.Shared {
		c.fail(proto.CodeInvalid, "only shared jobs can be preemptible")
		return
	}
	if m.Report && mode.Kind == lockq.Shared {
		c.fail(proto.CodeInvalid, "a run report is for exclusive and group jobs, not shared ones")
		return
	}
	uid := c.cred.Uid
	if s.waitingBy[uid] >= s.cfg.MaxWaiting && !m.Nonblock {
		c.fail(proto.CodeLimit, "user %s already has %d waiting requests (the limit)", s.userName(uid), s.cfg.MaxWaiting)
		return
	}
	j := &job{
		conn: c, uid: uid, user: s.userName(uid), clientPID: int(c.cred.Pid),
		mode: mode, resources: m.Resources, shared: mode.Kind == lockq.Shared,
		command: m.Command, since: time.Now(), key: m.Key, gov: c.gov,
		maxRuntime: time.Duration(m.MaxRuntimeMS) * time.Millisecond,
		report:     m.Report,
	}
	if len(j.resources) == 0 {
		j.resources = []string{lockq.Machine}
	}
	if limit := s.cfg.MaxExclusiveRuntime; limit > 0 && !j.shared && (j.maxRuntime == 0 || j.maxRuntime > limit) {
		j.maxRuntime = limit
	}
	if !rejoin && s.skip(c, j, time.Duration(m.IfElapsedMS)*time.Millisecond) {
		return
	}
	if !rejoin && j.key != "" {
		s.supersede(c, j, m.Replace, time.Duration(m.ExpireAfterMS)*time.Millisecond)
	}
	// Only the machine drives freezing: a shared holder of a named lock
	// must not be frozen, for freezing does not exclude anyone from a file.
	j.preemptible = m.Preemptible && machineOnly(j.resources)
	r := lockq.Request{Mode: mode, Resources: j.resources, Preemptible: j.preemptible, Owner: j}
	if m.TimeoutMS > 0 {
		r.Deadline = j.since.Add(time.Duration(m.TimeoutMS) * time.Millisecond)
	}
	var t lockq.Ticket
	var acts []lockq.Action
	switch {
	case rejoin:
		t = lockq.Ticket(m.Ticket)
		acts, err = s.q.EnqueueAt(t, r)
	case m.Nonblock:
		t, acts, err = s.q.Try(r)
	default:
		t, acts, err = s.q.Enqueue(r)
	}
	if errors.Is(err, lockq.ErrWouldBlock) {
		s.log.Debug("busy", "user", j.user, "pid", j.clientPID, "command", oneLine(j.command, 80))
		s.obs.Busy(mode.Kind)
		c.finish(proto.Msg{Type: proto.TBusy, Holders: holdersFor(j, s.q.Holders())})
		return
	}
	if err != nil {
		c.fail(proto.CodeInvalid, "%v", err)
		return
	}
	if err := s.state.reserve(s.q.Last()); err != nil {
		s.log.Error("saving the ticket mark", "err", err)
	}
	j.ticket = t
	j.name = jobName(mode, t)
	s.jobs[t] = j
	c.job = j
	s.waitingBy[uid]++
	if rejoin {
		s.log.Info("rejoined", "job", j.name, "user", j.user, "pid", j.clientPID)
	}
	s.apply(acts)
	if !j.holding() && s.jobs[t] == j {
		_, waiting := s.q.Len()
		j.lastPos, j.lastHold = waiting, ""
		hs := holdersFor(j, s.q.Holders())
		j.lastHold = holdersKey(hs)
		if e, ok := s.q.Lookup(t); ok && rejoin {
			waiting = e.Position
		}
		c.send(proto.Msg{Type: proto.TQueued, Ticket: uint64(t), Token: s.state.token(t, uid), Position: waiting, Holders: hs})
		s.log.Info("waiting", "job", j.name, "user", j.user, "pid", j.clientPID, "mode", mode.String(), "position", waiting)
	}
}

// machineOnly: the resources are exactly the machine.
func machineOnly(res []string) bool {
	return len(res) == 1 && res[0] == lockq.Machine
}

// skip answers "skipped" and reports true when j's key last completed
// successfully less than ifElapsed ago (--if-elapsed).
func (s *server) skip(c *conn, j *job, ifElapsed time.Duration) bool {
	if j.key == "" || ifElapsed <= 0 || s.history == nil {
		return false
	}
	last, ok := s.history.lastSuccess(j.uid, j.key)
	if !ok {
		return false
	}
	ago := time.Since(last)
	if ago >= ifElapsed {
		return false
	}
	s.log.Info("skipped", "key", j.key, "user", j.user, "last_success", last.Format(time.RFC3339))
	c.finish(proto.Msg{Type: proto.TSkipped, Message: fmt.Sprintf("%s last completed successfully %s ago (--if-elapsed %s)",
		j.key, agoString(ago), durString(ifElapsed))})
	return true
}

// supersede makes way for j among the jobs of the same key and owner: with
// replace, every older one is cancelled or stopped (the newest instance
// wins); with expireAfter, those that have held longer are stopped.
func (s *server) supersede(c *conn, j *job, replace bool, expireAfter time.Duration) {
	if !replace && expireAfter <= 0 {
		return
	}
	var olds []*job
	for _, o := range s.jobs {
		if o.key == j.key && o.uid == j.uid {
			olds = append(olds, o)
		}
	}
	slices.SortFunc(olds, func(a, b *job) int { return cmp.Compare(a.ticket, b.ticket) })
	for _, o := range olds {
		switch {
		case replace:
			s.log.Info("replacing older job of the same key", "job", o.name, "key", j.key)
			s.obs.Cancelled(o.mode.Kind, CancelReplace)
			s.cancelJob(o, fmt.Sprintf("replaced by a newer job with key %s (--replace)", j.key))
		case o.holding() && time.Since(o.since) > expireAfter:
			s.log.Info("expiring job of the same key", "job", o.name, "key", j.key, "held", time.Since(o.since).Round(time.Millisecond).String())
			s.obs.Cancelled(o.mode.Kind, CancelExpire)
			s.cancelJob(o, fmt.Sprintf("expired: held longer than %s (--expire-after of a newer job with key %s)", durString(expireAfter), j.key))
		}
	}
}

func jobName(m lockq.Mode, t lockq.Ticket) string {
	if m.Kind == lockq.Shared {
		return "s-" + strconv.FormatUint(uint64(t), 10)
	}
	return "x-" + strconv.FormatUint(uint64(t), 10)
}

// apply carries out the queue's actions, in order.
func (s *server) apply(acts []lockq.Action) {
	for _, a := range acts {
		j := s.jobs[a.Ticket]
		if j == nil {
			continue
		}
		switch a.Kind {
		case lockq.Grant:
			s.waitingBy[j.uid]--
			j.state = stateGranted
			now := time.Now()
			s.obs.Granted(j.mode.Kind, now.Sub(j.since))
			j.since = now
			if j.conn != nil {
				j.conn.send(proto.Msg{Type: proto.TGranted, Ticket: uint64(j.ticket), Job: j.name})
			}
			s.log.Info("granted", "job", j.name, "user", j.user, "pid", j.clientPID, "mode", j.mode.String())
		case lockq.Suspend:
			s.frozenSet[j.ticket] = false
		case lockq.Resume:
			// Its client hears "thawed" once the thaw is done (thawed).
			delete(s.frozenSet, j.ticket)
		case lockq.Expire:
			s.waitingBy[j.uid]--
			delete(s.jobs, j.ticket)
			if j.conn != nil {
				j.conn.finish(proto.Msg{Type: proto.TExpired})
				j.conn.job = nil
			}
			s.log.Info("timed out", "job", j.name, "user", j.user, "pid", j.clientPID)
			s.obs.TimedOut(j.mode.Kind)
		}
	}
	s.changed()
	s.wantFrozen = len(s.frozenSet) > 0
	s.steerFreezer()
}

// steerFreezer starts a freeze or thaw when the shared jobs' state is not
// what the queue wants. One call runs at a time; each result steers again.
func (s *server) steerFreezer() {
	if s.freezing || !s.drv.CanFreeze() {
		return
	}
	if s.wantFrozen == s.isFrozen {
		if s.isFrozen {
			s.confirmFrozen()
		}
		return
	}
	s.freezing = true
	want := s.wantFrozen
	begin := time.Now()
	s.goFn(func() {
		// Bounded: a wedged service manager becomes an error (and, for a
		// freeze, the drain fallback), not a daemon stuck for good.
		ctx, cancel := context.WithTimeout(s.ctx, driverTimeout)
		err := s.drv.SetSharedFrozen(ctx, want)
		cancel()
		s.post(func() { s.freezerDone(want, err, time.Since(begin)) })
	})
}

func (s *server) freezerDone(frozen bool, err error, took time.Duration) {
	s.freezing = false
	s.obs.Freezer(frozen, took, err)
	if err != nil {
		s.log.Error("freezer failed", "freeze", frozen, "err", err)
		if !frozen {
			// The shared jobs stay frozen until a thaw works: try again.
			s.goFn(func() {
				t := time.NewTimer(time.Second)
				defer t.Stop()
				select {
				case <-t.C:
					s.post(s.steerFreezer)
				case <-s.ctx.Done():
				}
			})
		}
		if frozen {
			// Whoever waited for the freeze waits for the shared jobs to end.
			var acts []lockq.Action
			for t, confirmed := range s.frozenSet {
				if !confirmed {
					a, _ := s.q.SuspendFailed(t)
					acts = append(acts, a...)
				}
			}
			s.apply(acts)
		}
		return
	}
	s.isFrozen = frozen
	s.log.Info("shared jobs "+map[bool]string{true: "frozen", false: "thawed"}[frozen], "took", took.String())
	if !frozen {
		s.thawed()
	}
	s.steerFreezer()
}

// thawed tells the clients of frozen jobs that theirs run again: the
// shared jobs are thawed as a whole.
func (s *server) thawed() {
	for _, j := range s.jobs {
		if j.frozen {
			j.frozen = false
			if j.conn != nil {
				j.conn.send(proto.Msg{Type: proto.TThawed})
			}
		}
	}
}

// confirmFrozen reports every suspension asked for as done: the shared jobs
// are frozen as a whole.
func (s *server) confirmFrozen() {
	var acts []lockq.Action
	for _, t := range sortedTickets(s.frozenSet) {
		if s.frozenSet[t] {
			continue
		}
		s.frozenSet[t] = true
		s.changed()
		if j := s.jobs[t]; j != nil && !j.frozen {
			j.frozen = true
			if j.conn != nil {
				j.conn.send(proto.Msg{Type: proto.TFrozen})
			}
		}
		a, _ := s.q.Suspended(t)
		acts = append(acts, a...)
	}
	if len(acts) > 0 {
		s.apply(acts)
	}
}

func sortedTickets(m map[lockq.Ticket]bool) []lockq.Ticket {
	ts := make([]lockq.Ticket, 0, len(m))
	for t := range m {
		ts = append(ts, t)
	}
	slices.Sort(ts)
	return ts
}

// place puts the client's held child into the job's cgroup or scope.
func (s *server) place(c *conn, pid int) {
	j := c.job
	if j == nil || j.state != stateGranted {
		c.fail(proto.CodeInvalid, "place is allowed once, after granted")
		return
	}
	if err := checkChild(pid, int(c.cred.Pid), c.cred.Uid); err != nil {
		s.log.Warn("place refused", "job", j.name, "pid", pid, "err", err)
		c.fail(proto.CodeDenied, "%v", err)
		return
	}
	j.state = statePlacing
	// Named locks only: no cgroup or scope, no freezing. The lease is the
	// connection and the descriptor the job inherits.
	named := !slices.Contains(j.resources, lockq.Machine)
	if named && !j.report {
		s.placed(j, pid, nonePlacement{pid: pid}, nil)
		return
	}
	spec := JobSpec{Ticket: uint64(j.ticket), Name: j.name, Shared: j.shared, User: j.user, Command: j.command, MaxRuntime: j.maxRuntime}
	report := j.report
	// The CPU frequency first (--governor), then the place: the held child
	// runs the job only after placed.
	s.pinThen(j, func() {
		s.placeInTurn(j.shared, func(done func()) {
			if j.conn == nil || s.jobs[j.ticket] != j {
				// Its client left (or it was cancelled) while it waited for
				// its pin or its turn: place nothing, end the lease.
				done()
				j.state = stateGranted
				s.maybeRelease(j)
				return
			}
			clientPID, uid := j.clientPID, j.uid
			s.goFn(func() {
				var p Placement = nonePlacement{pid: pid}
				err := checkChild(pid, clientPID, uid) // still the client's child, after the wait
				if err == nil && !named {
					// Bounded: a wedged service manager fails this job
					// rather than every later one behind it.
					ctx, cancel := context.WithTimeout(s.ctx, driverTimeout)
					p, err = s.drv.Place(ctx, spec, pid)
					cancel()
				}
				// A run report starts here, before the client lets the job exec.
				var start *runSample
				if err == nil && report {
					start = firstSample(s.ctx, s.drv, p, named)
				}
				s.post(func() {
					done()
					if start != nil {
						j.runStart, j.frozenAt = start, s.frozenCount()
					}
					s.placed(j, pid, p, err)
				})
			})
		})
	}, func(err error) { s.pinFailed(j, err) })
}

// maxPlacing bounds the driver's Place calls under way at once. A service
// manager starts units one at a time: with no bound, a burst of shared jobs
// (all granted together, to be frozen anyway) would queue their scopes
// ahead of an exclusive job's, which then waits for all of them.
const maxPlacing = 2

// placeInTurn runs start, which calls the driver's Place and then done (on
// the loop), once fewer than maxPlacing placements are under way; the
// placements of exclusive and group jobs go before those of shared jobs,
// each kind in the order asked.
func (s *server) placeInTurn(shared bool, start func(done func())) {
	if s.placing < maxPlacing {
		s.placing++
		start(s.placeDone)
		return
	}
	if shared {
		s.placeShared = append(s.placeShared, start)
	} else {
		s.placeFirst = append(s.placeFirst, start)
	}
}

// placeDone ends one placement and starts the next in turn.
func (s *server) placeDone() {
	s.placing--
	var next func(func())
	switch {
	case len(s.placeFirst) > 0:
		next, s.placeFirst = s.placeFirst[0], s.placeFirst[1:]
	case len(s.placeShared) > 0:
		next, s.placeShared = s.placeShared[0], s.placeShared[1:]
	default:
		return
	}
	s.placing++
	next(s.placeDone)
}

// pinFailed: the CPU frequency could not be pinned as j asked; the job
// does not run.
func (s *server) pinFailed(j *job, err error) {
	s.log.Warn("job not started: CPU frequency not pinned", "job", j.name, "governor", j.gov.String(), "err", err)
	j.state = stateGranted
	if j.conn != nil {
		j.conn.fail(proto.CodeUnavailable, "--governor %s: the job did not run: %v", j.gov, err)
	} else {
		s.maybeRelease(j)
	}
}

// frozenCount is the number of shared jobs whose freeze is confirmed.
func (s *server) frozenCount() int {
	n := 0
	for t, confirmed := range s.frozenSet {
		if j := s.jobs[t]; confirmed && j != nil && j.shared {
			n++
		}
	}
	return n
}

func (s *server) placed(j *job, pid int, p Placement, err error) {
	if err != nil {
		s.log.Error("placing job failed", "job", j.name, "pid", pid, "err", err)
		j.state = stateGranted
		if j.conn != nil {
			j.conn.fail(proto.CodeInternal, "perflockd could not place the job: %v", err)
		} else {
			s.maybeRelease(j)
		}
		return
	}
	j.state, j.place, j.childPID = stateRunning, p, pid
	if _, none := p.(nonePlacement); !none {
		s.saveRecord(j) // a restarted perflockd adopts the job whole
	}
	s.changed()
	if j.conn != nil {
		j.conn.send(proto.Msg{Type: proto.TPlaced, Where: p.Where()})
	}
	s.log.Info("running", "job", j.name, "pid", pid, "where", p.Where())
	s.watch(j, p)
}

// watch ends j's lease once its place is empty (and its client gone), and
// stops it at its max runtime.
func (s *server) watch(j *job, p Placement) {
	ctx, cancel := context.WithCancel(s.ctx)
	j.stopWatch = cancel
	if n, ok := p.(nativeMaxRuntime); j.maxRuntime > 0 && !(ok && n.EnforcesMaxRuntime()) {
		s.goFn(func() {
			t := time.NewTimer(j.maxRuntime)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
			s.log.Info("max runtime reached: stopping job", "job", j.name, "max_runtime", j.maxRuntime.String())
			if err := p.Stop(ctx, stopGrace); err != nil && ctx.Err() == nil {
				s.log.Error("stopping job", "job", j.name, "err", err)
			}
		})
	}
	s.goFn(func() {
		if err := p.WaitEmpty(ctx); err != nil {
			return
		}
		s.post(func() {
			j.empty = true
			s.maybeRelease(j)
		})
	})
}

func (s *server) done(c *conn, status int) {
	if j := c.job; j != nil && j.holding() {
		s.log.Info("job ended", "job", j.name, "status", status)
		j.status, j.reported = status, true
		if status == 0 && j.key != "" && s.history != nil {
			if err := s.history.record(j.uid, j.key, time.Now()); err != nil {
				s.log.Error("recording the job's completion", "job", j.name, "key", j.key, "err", err)
			}
		}
		if j.report && !j.reportSent {
			j.reportSent = true
			s.sendReport(c, j)
		}
	}
}

// sendReport answers done with the job's run report. The files are read
// outside the loop; the connection stays open (and so the job's cgroup)
// until the client has read the report and closed it.
func (s *server) sendReport(c *conn, j *job) {
	start, name, frozen, driver, policy := j.runStart, j.name, j.frozenAt, s.drv.Name(), s.policy.String()
	if start == nil {
		c.send(proto.Msg{Type: proto.TReport, Figures: &proto.Report{Job: name, Driver: driver, Policy: policy,
			Unavailable: map[string]string{"all": "the job was never placed"}}})
		return
	}
	s.goFn(func() {
		rep := buildReport(start, start.next(), name, driver, policy, frozen)
		c.send(proto.Msg{Type: proto.TReport, Figures: rep})
	})
}

// closed forgets a connection; its request is cancelled, or its lease ends
// once the job has no process left.
func (s *server) closed(c *conn) {
	if _, ok := s.conns[c]; ok {
		s.connsBy[c.cred.Uid]--
		if s.connsBy[c.cred.Uid] == 0 {
			delete(s.connsBy, c.cred.Uid)
		}
	}
	delete(s.conns, c)
	c.gone = true
	s.unwatch(c)
	j := c.job
	if j == nil {
		return
	}
	j.conn = nil
	if !j.holding() {
		s.waitingBy[j.uid]--
		delete(s.jobs, j.ticket)
		acts, err := s.q.Cancel(j.ticket)
		if err == nil {
			s.log.Info("cancelled", "job", j.name, "user", j.user, "pid", j.clientPID)
			s.obs.Cancelled(j.mode.Kind, CancelClient)
			s.apply(acts)
		}
		return
	}
	s.maybeRelease(j)
}

// maybeRelease ends the lease once the client is gone and the job is empty.
func (s *server) maybeRelease(j *job) {
	if j.conn != nil || s.jobs[j.ticket] != j {
		return
	}
	switch j.state {
	case statePlacing:
		return // placed() decides
	case stateRunning:
		if !j.empty {
			return
		}
	}
	delete(s.jobs, j.ticket)
	delete(s.frozenSet, j.ticket)
	s.dropRecord(j)
	if j.stopWatch != nil {
		j.stopWatch()
	}
	if j.place != nil {
		if err := j.place.Remove(); err != nil {
			s.log.Warn("removing job's place", "job", j.name, "err", err)
		}
	}
	s.unpin(j)
	acts, err := s.q.Release(j.ticket)
	if err != nil {
		s.log.Error("release", "job", j.name, "err", err)
		return
	}
	s.log.Info("released", "job", j.name, "held", time.Since(j.since).Round(time.Millisecond).String())
	s.obs.Exited(j.mode.Kind, j.result())
	s.apply(acts)
}

// holdersFor summarises, from the queue's holders, those in j's way: at
// most maxListedHolders.
func holdersFor(j *job, holders []lockq.Entry) []proto.Holder {
	var out []proto.Holder
	now := time.Now()
	for _, e := range holders {
		h, ok := e.Owner.(*job)
		if !ok || !overlaps(h.resources, j.resources) || h.mode.Compatible(j.mode) {
			continue
		}
		out = append(out, proto.Holder{
			User: h.user, Mode: h.mode.String(), Command: oneLine(h.command, maxCommandInStatus),
			HeldMS: now.Sub(h.since).Milliseconds(), Frozen: e.Suspend == lockq.IsSuspended,
		})
		if len(out) == maxListedHolders {
			break
		}
	}
	return out
}

func overlaps(a, b []string) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}

func holdersKey(hs []proto.Holder) string {
	var b strings.Builder
	for _, h := range hs {
		fmt.Fprintf(&b, "%s\x00%s\x00%s\x00%v\x01", h.User, h.Mode, h.Command, h.Frozen)
	}
	return b.String()
}

func oneLine(argv []string, max int) string {
	s := strings.Join(argv, " ")
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > max {
		s = s[:max-3] + "..."
	}
	return s
}

// broadcast tells waiters whose position or blockers changed.
func (s *server) broadcast() {
	if !s.dirty {
		return
	}
	s.dirty = false
	view := s.q.View()
	hold, _ := s.q.Len()
	holders := view[:hold]
	for _, e := range view[hold:] {
		j, ok := e.Owner.(*job)
		if !ok || j.conn == nil {
			continue
		}
		hs := holdersFor(j, holders)
		key := holdersKey(hs)
		if e.Position == j.lastPos && key == j.lastHold {
			continue
		}
		j.lastPos, j.lastHold = e.Position, key
		j.conn.send(proto.Msg{Type: proto.TWaiting, Position: e.Position, Holders: hs})
	}
}

// listChunk bounds the entries of one list message, in encoded bytes, and
// listCommand the bytes of one entry's command.
const (
	listChunk   = proto.MaxMessage / 2
	listCommand = 4096
)

// list is the queue as wholock shows it, in as many list messages as it
// takes (each within proto.MaxMessage).
func (s *server) list() []proto.Msg {
	now := time.Now()
	var msgs []proto.Msg
	m := proto.Msg{Type: proto.TList, Entries: []proto.Entry{}}
	size := 0
	for _, e := range s.q.View() {
		j, ok := e.Owner.(*job)
		if !ok {
			continue
		}
		ent := proto.Entry{
			Ticket: uint64(j.ticket), Job: j.name, Mode: j.mode.String(), Resources: j.resources,
			User: j.user, UID: j.uid, PID: j.clientPID, ChildPID: j.childPID, Position: e.Position,
			SinceMS: j.since.UnixMilli(), ForMS: now.Sub(j.since).Milliseconds(), Command: capWords(j.command, listCommand),
		}
		if j.place != nil {
			ent.Where = j.place.Where()
		}
		if j.gov != governor.None {
			ent.Governor = j.gov.String()
		}
		switch {
		case !e.Holding:
			ent.State = "waiting"
		case e.Suspend == lockq.IsSuspended:
			ent.State = "frozen"
		case e.Suspend == lockq.Suspending:
			ent.State = "freezing"
		case j.state == stateRunning:
			ent.State = "running"
		default:
			ent.State = "granted"
		}
		b, _ := json.Marshal(ent)
		if size+len(b) > listChunk && len(m.Entries) > 0 {
			m.More = true
			msgs = append(msgs, m)
			m = proto.Msg{Type: proto.TList, Entries: []proto.Entry{}}
			size = 0
		}
		size += len(b) + 1
		m.Entries = append(m.Entries, ent)
	}
	return append(msgs, m)
}

// capWords keeps the first words of argv that fit in max bytes.
func capWords(argv []string, max int) []string {
	n := 0
	for i, w := range argv {
		n += len(w) + 1
		if n > max {
			out := append([]string(nil), argv[:i]...)
			if room := max - (n - len(w) - 1); room > 3 {
				out = append(out, w[:room-3]+"...")
			}
			return out
		}
	}
	return argv
}

// notifyStatus tells the service manager (systemd's STATUS=, shown by
// systemctl status) what the queue looks like; a no-op elsewhere.
func (s *server) notifyStatus() {
	st := s.summary(time.Now())
	if st == s.lastStatus {
		return
	}
	s.lastStatus = st
	sdnotify.SdNotify(false, "STATUS="+st)
}

// summary is one line about the queue, e.g. "1 exclusive running (alice:
// make bench, 2m10s); 3 waiting; 2 shared frozen".
func (s *server) summary(now time.Time) string {
	var excl, shared, frozen int
	var first *job
	for _, e := range s.q.Holders() {
		j, ok := e.Owner.(*job)
		if !ok {
			continue
		}
		switch {
		case e.Suspend != lockq.NotSuspended:
			frozen++
		case j.shared:
			shared++
		default:
			excl++
			if first == nil {
				first = j
			}
		}
	}
	_, waiting := s.q.Len()
	var parts []string
	if excl > 0 {
		p := fmt.Sprintf("%d exclusive running", excl)
		if first != nil {
			p += fmt.Sprintf(" (%s: %s, %s)", first.user, oneLine(first.command, 60), now.Sub(first.since).Round(time.Second))
		}
		parts = append(parts, p)
	}
	if shared > 0 {
		parts = append(parts, fmt.Sprintf("%d shared running", shared))
	}
	if waiting > 0 {
		parts = append(parts, fmt.Sprintf("%d waiting", waiting))
	}
	if frozen > 0 {
		parts = append(parts, fmt.Sprintf("%d shared frozen", frozen))
	}
	if len(parts) == 0 {
		return "idle"
	}
	return strings.Join(parts, "; ")
}

// adopt re-creates the jobs an earlier daemon left running, before anything
// is granted. If an exclusive job runs, the shared jobs stay (or are made)
// frozen; otherwise they are thawed.
func (s *server) adopt(ctx context.Context) error {
	var found []Adopted
	if a, ok := s.drv.(adopter); ok {
		var err error
		if found, _, err = a.Adopt(ctx); err != nil {
			return fmt.Errorf("daemon: adopting running jobs: %w", err)
		}
	}
	// Exclusive jobs first: a suspended shared holder adopted while no
	// exclusive one holds would be resumed at once.
	slices.SortFunc(found, func(a, b Adopted) int {
		if a.Shared != b.Shared {
			return boolCmp(a.Shared, b.Shared)
		}
		return cmp.Compare(a.Ticket, b.Ticket)
	})
	exclusive := false
	for _, a := range found {
		exclusive = exclusive || !a.Shared
	}
	freeze := exclusive && s.policy == lockq.Freeze
	if s.drv.CanFreeze() {
		if err := s.drv.SetSharedFrozen(ctx, freeze); err != nil {
			return fmt.Errorf("daemon: setting shared jobs frozen=%v after restart: %w", freeze, err)
		}
		s.isFrozen = freeze
	}
	// The queue's actions are carried out once all are adopted: midway, the
	// frozen set is incomplete and would thaw the shared jobs for a moment.
	var acts []lockq.Action
	records := s.loadRecords()
	for _, a := range found {
		t := lockq.Ticket(a.Ticket)
		mode := lockq.ExclusiveMode()
		if a.Shared {
			mode = lockq.SharedMode()
		}
		j := &job{ticket: t, name: jobName(mode, t), mode: mode, resources: []string{lockq.Machine},
			shared: a.Shared, preemptible: a.Shared, state: stateRunning, since: time.Now(), place: a.Placement, user: "?"}
		if len(a.PIDs) > 0 {
			j.childPID = a.PIDs[0]
			if uid, argv, err := procOwner(a.PIDs[0]); err == nil {
				j.uid, j.user, j.command = uid, s.userName(uid), argv
			}
		}
		if rec, ok := records[t]; ok {
			delete(records, t)
			j.recorded = true // removed with the lease, read or not
			if err := j.fromRecord(rec); err != nil {
				s.log.Warn("ignoring the job's record", "job", j.name, "err", err)
			} else {
				j.user = s.userName(j.uid)
			}
		}
		suspended := j.preemptible && freeze
		r := lockq.Request{Mode: j.mode, Resources: j.resources, Preemptible: j.preemptible, Owner: j}
		more, err := s.q.Adopt(t, r, suspended)
		if err != nil {
			s.log.Error("adopting job", "job", j.name, "err", err)
			continue
		}
		s.jobs[t] = j
		if suspended {
			s.frozenSet[t] = true
			j.frozen = true
		}
		s.log.Info("adopted running job", "job", j.name, "user", j.user, "where", a.Placement.Where(), "frozen", suspended)
		s.watch(j, a.Placement)
		acts = append(acts, more...)
	}
	for t := range records { // of jobs that ended while no perflockd ran
		os.Remove(s.recordPath(t))
	}
	s.apply(acts)
	return nil
}

// cancel is `wholock --cancel`: a waiting request leaves the queue, a
// running job is stopped (SIGTERM, then SIGKILL). Its owner or root only.
func (s *server) cancel(c *conn, m proto.Msg) {
	t := lockq.Ticket(m.Ticket)
	if m.Job != "" {
		_, num, _ := strings.Cut(m.Job, "-")
		n, err := strconv.ParseUint(num, 10, 64)
		if err != nil {
			c.fail(proto.CodeInvalid, "no job %q: want a job name like x-42 or a ticket number", m.Job)
			return
		}
		t = lockq.Ticket(n)
	}
	j := s.jobs[t]
	if j == nil {
		c.fail(proto.CodeInvalid, "no job with ticket %d (wholock lists them)", t)
		return
	}
	if c.cred.Uid != 0 && c.cred.Uid != j.uid {
		s.log.Warn("cancel refused", "job", j.name, "by_uid", c.cred.Uid, "owner", j.user)
		c.fail(proto.CodeDenied, "job %s belongs to %s: only its owner or root may cancel it", j.name, j.user)
		return
	}
	by := s.userName(c.cred.Uid)
	s.log.Info("cancel", "job", j.name, "by", by)
	s.obs.Cancelled(j.mode.Kind, CancelUser)
	s.cancelJob(j, "cancelled by "+by)
	c.finish(proto.Msg{Type: proto.TCancelled, Job: j.name})
}

// cancelJob takes a waiting job out of line or stops a running one
// (SIGTERM, then SIGKILL), telling its client why.
func (s *server) cancelJob(j *job, why string) {
	notice := proto.Msg{Type: proto.TCancelled, Job: j.name, Message: why}
	switch {
	case !j.holding():
		acts, err := s.q.Cancel(j.ticket)
		if err == nil {
			s.waitingBy[j.uid]--
			delete(s.jobs, j.ticket)
			if j.conn != nil {
				j.conn.finish(notice)
				j.conn.job = nil
			}
			s.apply(acts)
		}
	case j.place != nil:
		if j.conn != nil {
			j.conn.send(notice)
		}
		p := j.place
		s.goFn(func() {
			if err := p.Stop(s.ctx, stopGrace); err != nil && s.ctx.Err() == nil {
				s.log.Error("stopping job", "job", j.name, "err", err)
			}
		})
	case j.conn != nil:
		j.conn.finish(notice) // granted, nothing placed: closing ends the lease
	}
}

// boolCmp orders false before true.
func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}
