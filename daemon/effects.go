package daemon

import (
	"context"
	"log/slog"
	"time"

	"github.com/perflock/perflock/daemon/core"
	"github.com/perflock/perflock/governor"
	"github.com/perflock/perflock/lockq"
)

// do carries out one effect of the core.
func (s *server) do(e core.Effect) {
	switch e := e.(type) {
	case core.Reply:
		s.reply(e)
	case core.SetFrozen:
		s.setFrozen(e.Frozen)
	case core.PinSet:
		s.pinSet(e.Mode)
	case core.PinRestore:
		s.pinRestore()
	case core.SetShield:
		s.setShield(e.On)
	case core.SetBusy:
		s.busy.set(e.Busy, e.Reason)
	case core.PlaceJob:
		s.placeJob(e)
	case core.WatchEmpty:
		s.watchEmpty(e.Ticket)
	case core.StopJob:
		s.stopJob(e.Ticket, e.Why)
	case core.EndLease:
		s.endLease(e.Ticket)
	case core.SaveRecord:
		s.saveRecord(e.Ticket, e.Record)
	case core.DropRecord:
		s.dropRecord(e.Ticket)
	case core.Completed:
		s.completed(e)
	case core.SendReport:
		s.sendReport(e)
	case core.Log:
		s.logCore(e)
	case core.Observe:
		s.observe(e)
	default:
		s.log.Error("an effect the shell does not know", "effect", e)
	}
}

// reply sends a reply to its connection, if it is still open.
func (s *server) reply(r core.Reply) {
	c := s.conns[r.Conn]
	if c == nil {
		return
	}
	m := s.render(r)
	if r.Last {
		c.finish(m)
	} else {
		c.send(m)
	}
}

// setFrozen freezes or thaws the shared side off the loop, bounded: a
// wedged service manager becomes an error (and, for a freeze, the drain
// fallback), not a daemon stuck for good.
func (s *server) setFrozen(frozen bool) {
	begin := time.Now()
	s.goFn(func() {
		ctx, cancel := context.WithTimeout(s.ctx, driverTimeout)
		err := s.drv.SetSharedFrozen(ctx, frozen)
		cancel()
		took := time.Since(begin)
		s.post(func() {
			s.obs.Freezer(frozen, took, err)
			if err == nil {
				s.log.Info("freezer done", "frozen", frozen, "took", took.String())
			}
			s.step(core.FreezerDone{Err: err, Now: s.now()})
		})
	})
}

// placeJob has the driver place a job's first process, off the loop.
func (s *server) placeJob(e core.PlaceJob) {
	spec := JobSpec{Ticket: uint64(e.Job.Ticket), Name: e.Job.Name, Shared: e.Job.Shared, User: e.Job.User,
		Command: e.Job.Command, MaxRuntime: time.Duration(e.Job.MaxRuntime)}
	// Nothing to place, so no wait off the loop: a scheduler's cgroup (it
	// need not exist yet), or named locks only (no cgroup; the lease is the
	// connection).
	var inline Placement
	switch {
	case e.Job.Bind != "":
		inline = newBoundPlacement(s.cgroup2, e.Job.Bind, time.Duration(e.Job.BindGrace))
	case e.Named && !e.Report:
		inline = nonePlacement{pid: e.PID}
	}
	if inline != nil {
		s.places[e.Job.Ticket] = &place{p: inline}
		s.step(core.PlaceDone{Ticket: e.Job.Ticket, Where: inline.Where(), Now: s.now()})
		return
	}
	s.goFn(func() {
		var p Placement = nonePlacement{pid: e.PID}
		first := openFirst(e.PID)                                       // before the check: from here on the pid is this process
		err := checkChild(e.PID, e.ClientPID, e.ClientStart, e.Job.UID) // still the client or its child, after the wait
		if err == nil && !e.Named {
			// Bounded: a wedged service manager fails this job rather than
			// every later one behind it.
			ctx, cancel := context.WithTimeout(s.ctx, driverTimeout)
			p, err = s.drv.Place(ctx, spec, e.PID)
			cancel()
		}
		// A run report starts here, before the client lets the job exec.
		var start *runSample
		if err == nil && e.Report {
			start = firstSample(s.ctx, s.drv, p, e.Named)
		}
		s.post(func() {
			done := core.PlaceDone{Ticket: e.Job.Ticket, Err: err, Now: s.now()}
			if err == nil {
				s.places[e.Job.Ticket] = &place{p: p, start: start, first: first}
				done.Where, done.NativeMaxRuntime = p.Where(), p.EnforcesMaxRuntime()
			} else if first != nil {
				first.Close()
			}
			s.step(done)
		})
	})
}

// watchEmpty tells the core once a job's place has no process left.
func (s *server) watchEmpty(t lockq.Ticket) {
	pl := s.places[t]
	if pl == nil {
		s.log.Error("no place to watch", "ticket", t)
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	pl.stopWatch = cancel
	p := pl.p
	if pl.first != nil {
		s.watchFirst(ctx, t, p, pl.first)
		pl.first = nil
	}
	s.goFn(func() {
		if err := p.WaitEmpty(ctx); err != nil {
			return
		}
		s.post(func() { s.step(core.Emptied{Ticket: t, Now: s.now()}) })
	})
}

// stopJob ends a job (SIGTERM, then SIGKILL), off the loop.
func (s *server) stopJob(t lockq.Ticket, why string) {
	pl := s.places[t]
	if pl == nil {
		return
	}
	p := pl.p
	s.goFn(func() {
		if err := p.Stop(s.ctx, stopGrace); err != nil && s.ctx.Err() == nil {
			s.log.Error("stopping job", "where", p.Where(), "why", why, "err", err)
		}
	})
}

// endLease lets go of a job whose lease ended.
func (s *server) endLease(t lockq.Ticket) {
	pl := s.places[t]
	if pl == nil {
		return
	}
	delete(s.places, t)
	if pl.stopWatch != nil {
		pl.stopWatch()
	}
	if pl.first != nil {
		pl.first.Close()
	}
	if err := pl.p.Remove(); err != nil {
		s.log.Warn("removing job's place", "where", pl.p.Where(), "err", err)
	}
}

// completed records a keyed job's success (--key, --if-elapsed); the
// history's writer saves it, off the loop.
func (s *server) completed(e core.Completed) {
	if s.history != nil {
		s.history.record(e.UID, e.Key, wall(e.At))
	}
}

// logCore logs a record of the core, its durations as time.Duration.
func (s *server) logCore(l core.Log) {
	attrs := make([]any, len(l.Attrs))
	for i, a := range l.Attrs {
		switch v := a.(type) {
		case core.Duration:
			a = time.Duration(v).Round(time.Millisecond).String()
		case error:
			a = v.Error()
		}
		attrs[i] = a
	}
	s.log.Log(s.ctx, slog.Level(l.Level), l.Msg, attrs...)
}

func (s *server) observe(o core.Observe) {
	switch o.What {
	case core.ObserveGranted:
		s.obs.Granted(o.Kind, time.Duration(o.Waited))
	case core.ObserveBusy:
		s.obs.Busy(o.Kind)
	case core.ObserveTimedOut:
		s.obs.TimedOut(o.Kind)
	case core.ObserveCancelled:
		s.obs.Cancelled(o.Kind, o.Reason)
	case core.ObserveExited:
		s.obs.Exited(o.Kind, o.Result)
	}
}

// pinSet and pinRestore change the CPU frequency off the loop.
func (s *server) pinSet(mode string) {
	m, err := governor.ParseMode(mode)
	s.goFn(func() {
		if err == nil {
			// A Set whose roll-back failed left its state file: put those
			// settings back first, or every later Set fails.
			if _, err = s.pinner.RestoreLeftover(); err == nil {
				// Bounded: Set checks ctx between CPUs and rolls back.
				ctx, cancel := context.WithTimeout(s.ctx, driverTimeout)
				err = s.pinner.Set(ctx, m)
				cancel()
			}
		}
		s.post(func() { s.step(core.PinDone{Err: err, Now: s.now()}) })
	})
}

func (s *server) pinRestore() {
	s.goFn(func() {
		// An earlier daemon's pin, too: the pinner adopted its state file.
		err := s.pinner.Restore()
		s.post(func() { s.step(core.PinDone{Err: err, Now: s.now()}) })
	})
}
