package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/governor"
	"github.com/perflock/perflock/lockq"
	"github.com/perflock/perflock/proto"
)

// pinState is the CPU frequency pin (perfrun --governor) that the holders
// of the machine share. Loop-owned, except p, which is set before the loop
// starts and is safe for any goroutine.
//
// One Set or Restore runs at a time, off the loop (busy); each result
// steers again, like the freezer. The pin's users are the exclusive or
// group jobs that asked for it and are being placed or run: the first one
// pins, the last one to end restores. A job that asks for another mode
// while the pin is in force is refused (a benchmark must not run at a
// frequency it did not ask for); a job without --governor runs under
// whatever a group it joins has pinned, but otherwise waits for an earlier
// pin to be restored.
type pinState struct {
	p       *governor.Pinner
	users   map[lockq.Ticket]bool
	mode    governor.Mode // what the users asked for
	cur     governor.Mode // what is in force: None when the settings are the machine's own
	busy    bool          // a Set or Restore runs
	stuck   bool          // the last Restore failed: retried on the next event only
	waiting []pinWaiter   // placements waiting for the pin to settle
}

// pinWaiter is a placement that goes on (next) once the frequency is as
// its job asked, or fails.
type pinWaiter struct {
	j    *job
	next func()
	fail func(error)
}

// errPinConflict: a job asked for a mode other than the one in force.
var errPinConflict = errors.New("the CPU frequency is pinned")

// checkGovernor parses and checks an acquire's governor, on the
// connection's reader before the request is queued: a bad value is
// invalid; a machine or daemon that cannot pin is unavailable, so that the
// request fails at once instead of after waiting its turn.
func (s *server) checkGovernor(m proto.Msg) (governor.Mode, string, error) {
	mode, err := governor.ParseMode(m.Governor)
	if err != nil {
		return mode, proto.CodeInvalid, fmt.Errorf("--governor %q: want performance, none, or a percentage from 1 to 100 such as 70%%", m.Governor)
	}
	if mode == governor.None {
		return mode, "", nil
	}
	flag := "--governor " + mode.String()
	if lm, err := lockq.ParseMode(m.Mode); err == nil && lm.Kind == lockq.Shared {
		return mode, proto.CodeInvalid, fmt.Errorf("%s: shared jobs never pin the CPU frequency (perfrun's exclusive and group jobs do)", flag)
	}
	if len(m.Resources) > 0 && !slices.Contains(m.Resources, lockq.Machine) {
		return mode, proto.CodeInvalid, fmt.Errorf("%s pins the whole machine: the request must hold the machine (resource %s)", flag, lockq.Machine)
	}
	err = s.pin.p.Check(mode)
	switch {
	case err == nil:
		return mode, "", nil
	case errors.Is(err, governor.ErrNoCpufreq):
		return mode, proto.CodeUnavailable, fmt.Errorf("%s: cpufreq is not available on this machine (no cpufreq driver, common in virtual machines): run without --governor", flag)
	case errors.Is(err, governor.ErrUnsupported):
		return mode, proto.CodeUnavailable, fmt.Errorf("%s: %s: run with another --governor, or without", flag, strings.TrimPrefix(err.Error(), "governor: "))
	case os.Geteuid() != 0 && (errors.Is(err, fs.ErrPermission) || errors.Is(err, unix.EROFS)):
		return mode, proto.CodeUnavailable, fmt.Errorf("%s: this perflockd runs as uid %d, not root, and cannot change the CPU frequency: the system perflockd (run as root, e.g. perflockd install) is needed; run without --governor", flag, os.Geteuid())
	}
	return mode, proto.CodeUnavailable, fmt.Errorf("%s: perflockd cannot pin the CPU frequency: %s", flag, strings.TrimPrefix(err.Error(), "governor: "))
}

// pinThen calls next once the CPU frequency is as j asked (at once when
// it is, or when j pins nothing and no earlier pin is still in force), or
// fail when it cannot be.
func (s *server) pinThen(j *job, next func(), fail func(error)) {
	g := &s.pin
	if j.shared || !slices.Contains(j.resources, lockq.Machine) {
		next()
		return
	}
	if j.gov == governor.None {
		settled := !g.busy && (len(g.users) > 0 && g.cur == g.mode || len(g.users) == 0 && g.cur == governor.None)
		if settled {
			next() // under its group's pin, or nothing pinned
			return
		}
		// A pin is being set for its group, or an earlier one restored:
		// the job starts after.
	} else {
		if len(g.users) > 0 && g.mode != j.gov {
			fail(fmt.Errorf("%w at %s for %s of the same group: run with --governor %s, or none",
				errPinConflict, g.mode, s.pinUsers(), g.mode))
			return
		}
		g.users[j.ticket] = true
		g.mode = j.gov
	}
	g.waiting = append(g.waiting, pinWaiter{j: j, next: next, fail: fail})
	g.stuck = false
	s.steerPin()
}

// pinUsers names the pin's users, for messages.
func (s *server) pinUsers() string {
	var names []string
	for _, t := range sortedTickets(s.pin.users) {
		if j := s.jobs[t]; j != nil {
			names = append(names, j.name)
		}
	}
	return "job " + strings.Join(names, ", ")
}

// unpin drops j from the pin's users once its lease ended; the last one
// restores the settings.
func (s *server) unpin(j *job) {
	if !s.pin.users[j.ticket] {
		return
	}
	delete(s.pin.users, j.ticket)
	s.pin.stuck = false
	s.steerPin()
}

// steerPin starts a Set or Restore when what is in force is not what the
// users want, and lets the waiting placements go on once it is.
func (s *server) steerPin() {
	g := &s.pin
	if g.busy {
		return
	}
	target := governor.None
	if len(g.users) > 0 {
		target = g.mode
	}
	if g.cur != target && !(g.stuck && target == governor.None) {
		g.busy = true
		restore := g.cur != governor.None // a different mode is restored first
		p, from := g.p, g.cur
		s.goFn(func() {
			var err error
			if restore {
				err = p.Restore()
			} else {
				// A Set whose roll-back failed left its state file: put
				// those settings back first, or every later Set fails.
				if _, err = p.RestoreLeftover(); err == nil {
					// Bounded: Set checks ctx between CPUs and rolls back.
					ctx, cancel := context.WithTimeout(s.ctx, driverTimeout)
					err = p.Set(ctx, target)
					cancel()
				}
			}
			s.post(func() { s.pinDone(restore, from, target, err) })
		})
		return
	}
	waiting := g.waiting
	g.waiting = nil
	for _, w := range waiting {
		if w.j.gov == governor.None || w.j.gov == g.cur {
			w.next()
		} else {
			w.fail(fmt.Errorf("the CPU frequency is not at %s", w.j.gov))
		}
	}
}

// pinDone takes the result of a Set (to mode) or a Restore (of from).
func (s *server) pinDone(restore bool, from, mode governor.Mode, err error) {
	g := &s.pin
	g.busy = false
	switch {
	case err == nil && restore:
		g.cur = governor.None
		s.log.Info("CPU frequency settings restored", "were", from.String())
	case err == nil:
		g.cur = mode
		s.log.Info("CPU frequency pinned", "governor", mode.String(), "for", s.pinUsers())
	default:
		if restore {
			g.stuck = true
			s.log.Error("restoring the CPU frequency settings failed; retried when a job ends or asks for --governor", "were", from.String(), "err", err)
			err = fmt.Errorf("perflockd could not restore the settings of an earlier pin (%s): %s", from, strings.TrimPrefix(err.Error(), "governor: "))
		} else {
			s.log.Error("pinning the CPU frequency failed", "governor", mode.String(), "err", err)
			err = fmt.Errorf("perflockd could not pin the CPU frequency: %s", strings.TrimPrefix(err.Error(), "governor: "))
		}
		// Every user is still waiting (none runs before the pin is in
		// force): they fail, and whoever waits for nothing goes on.
		waiting := g.waiting
		g.waiting = nil
		var failed []pinWaiter
		for _, w := range waiting {
			if w.j.gov == governor.None {
				g.waiting = append(g.waiting, w)
			} else {
				delete(g.users, w.j.ticket)
				failed = append(failed, w)
			}
		}
		for _, w := range failed {
			w.fail(err)
		}
	}
	s.steerPin()
}

// startPin settles, at start and after adoption, the pin an earlier
// perflockd may have left (its state file): kept while an adopted
// exclusive or group job that asked for it runs (any of them, when no
// record says), until the last of them ends; restored at once otherwise.
func (s *server) startPin() {
	g := &s.pin
	var holders []*job
	for _, j := range s.jobs {
		if !j.shared && j.state == stateRunning {
			holders = append(holders, j)
		}
	}
	// Their records say which asked for the pin; without records, any of
	// them may have.
	var asked []*job
	for _, j := range holders {
		if j.gov != governor.None {
			asked = append(asked, j)
		}
	}
	if len(asked) > 0 {
		holders = asked
	}
	if len(holders) > 0 {
		found, err := g.p.Adopt()
		switch {
		case err != nil:
			s.log.Error("the CPU frequency state file of an earlier perflockd cannot be read; check the settings, then remove it", "err", err)
		case found:
			g.mode = g.p.Mode()
			g.cur = g.mode
			var names []string
			for _, j := range holders {
				g.users[j.ticket] = true
				j.gov = g.mode
				names = append(names, j.name)
			}
			slices.Sort(names)
			s.log.Info("kept the CPU frequency pinned for adopted jobs; restored when they end", "governor", g.mode.String(), "jobs", strings.Join(names, ","))
		}
		return
	}
	found, err := g.p.RestoreLeftover()
	switch {
	case err != nil:
		s.log.Error("restoring the CPU frequency settings an earlier perflockd left failed", "err", err)
	case found:
		s.log.Info("restored the CPU frequency settings an earlier perflockd left pinned (no job of it runs)")
	}
}
