package daemon

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/perflock/perflock/daemon/core"
	"github.com/perflock/perflock/lockq"
)

// adopt hands the core, before anything is granted, the jobs an earlier
// daemon left running (found by the driver, with their records) and the
// CPU pin it may have left, and carries out what the core decides. The
// shared jobs are frozen or thawed before the daemon serves: a failure
// there stops the start.
func (s *server) adopt(ctx context.Context) error {
	found, err := s.drv.Adopt(ctx)
	if err != nil {
		return fmt.Errorf("daemon: adopting running jobs: %w", err)
	}
	records := s.loadRecords()
	ev := core.Adopt{Now: s.now()}
	for _, a := range found {
		t := lockq.Ticket(a.Ticket)
		s.places[t] = &place{p: a.Placement}
		ad := core.Adopted{Ticket: t, Shared: a.Shared, Where: a.Placement.Where(), NativeMaxRuntime: a.Placement.EnforcesMaxRuntime()}
		if len(a.PIDs) > 0 {
			ad.PID = a.PIDs[0]
			if uid, argv, err := procOwner(a.PIDs[0]); err == nil {
				ad.UID, ad.User, ad.Command = uid, s.userName(uid), argv
			}
		}
		if rec, ok := records[t]; ok {
			delete(records, t)
			ad.Record = s.coreRecord(t, rec)
		}
		ev.Jobs = append(ev.Jobs, ad)
	}
	ev.Jobs = append(ev.Jobs, s.adoptByRecord(records)...)
	pinned, perr := s.pinner.Adopt()
	ev.Pin = core.PinLeft{Found: pinned, Err: perr}
	if pinned {
		ev.Pin.Mode = s.pinner.Mode().String()
	}
	shielded, serr := s.shield.Adopt()
	ev.Shield = core.ShieldLeft{Found: shielded, Err: serr}
	// The freeze (or thaw) and the restore of a pin left behind are done at
	// once, before serving: nothing may be granted meanwhile.
	var after []core.Event
	for _, e := range s.core.Step(ev) {
		switch e := e.(type) {
		case core.SetFrozen:
			if err := s.drv.SetSharedFrozen(ctx, e.Frozen); err != nil {
				return fmt.Errorf("daemon: setting shared jobs frozen=%v after restart: %w", e.Frozen, err)
			}
			after = append(after, core.FreezerDone{Now: s.now()})
		case core.PinRestore:
			after = append(after, core.PinDone{Err: s.pinner.Restore(), Now: s.now()})
		case core.SetShield: // the lowering of a shield no adopted job needs
			after = append(after, core.ShieldDone{Err: s.shield.Lower(ctx), Now: s.now()})
		default:
			s.do(e)
		}
	}
	for _, e := range after {
		s.step(e)
	}
	return nil
}

// adoptByRecord adopts the jobs the driver did not find from their records:
// leases bound to a scheduler's cgroup, and jobs without a cgroup whose first
// process runs. The records of the others are removed.
func (s *server) adoptByRecord(records map[lockq.Ticket]jobRecord) []core.Adopted {
	var out []core.Adopted
	for t, rec := range records {
		if a, ok := s.adoptBound(t, rec); ok {
			out = append(out, a)
		} else if a, ok := s.adoptByProcess(t, rec); ok {
			out = append(out, a)
		} else {
			os.Remove(s.recordPath(t)) // a job that ended while no perflockd ran
		}
	}
	return out
}

// adoptBound adopts, from its record, a lease bound to a scheduler's
// cgroup that still has a process. (One whose cgroup had none yet when the
// earlier daemon stopped is not adopted: the scheduler's job had not
// started, and its Prolog's request is gone with that daemon.)
func (s *server) adoptBound(t lockq.Ticket, rec jobRecord) (core.Adopted, bool) {
	if rec.Bind == "" || s.cgroup2 == "" {
		return core.Adopted{}, false
	}
	r := s.coreRecord(t, rec)
	if r == nil {
		return core.Adopted{}, false
	}
	p := newBoundPlacement(s.cgroup2, rec.Bind, 0)
	if up, err := p.Populated(s.ctx); err != nil || !up {
		return core.Adopted{}, false
	}
	s.places[t] = &place{p: p}
	return core.Adopted{Ticket: t, Shared: r.Mode.Kind == lockq.Shared, Process: true, Where: rec.Bind,
		UID: r.UID, User: r.User, Command: r.Command, Record: r}, true
}

// adoptByProcess adopts, from its record, a job without a cgroup whose
// first process still runs.
func (s *server) adoptByProcess(t lockq.Ticket, rec jobRecord) (core.Adopted, bool) {
	if rec.PID <= 0 || rec.PIDStart == 0 {
		return core.Adopted{}, false
	}
	r := s.coreRecord(t, rec)
	if r == nil {
		return core.Adopted{}, false
	}
	p, err := adoptProcess(rec.PID, rec.PIDStart)
	if err != nil {
		return core.Adopted{}, false
	}
	// The record's owner must be the process's: a daemon never stops, nor
	// holds a lock for, a process of another user on a record's word.
	if uid, _, err := procOwner(rec.PID); err != nil || uid != r.UID {
		s.log.Warn("not adopting a process its record does not own", "ticket", t, "pid", rec.PID, "record_uid", r.UID)
		p.Remove()
		return core.Adopted{}, false
	}
	s.places[t] = &place{p: p}
	return core.Adopted{Ticket: t, Shared: r.Mode.Kind == lockq.Shared, Process: true, PID: rec.PID,
		UID: r.UID, User: r.User, Command: r.Command, Record: r}, true
}

// procOwner reads a process's real uid and command line, for listing an
// adopted job.
func procOwner(pid int) (uid uint32, argv []string, err error) {
	b, err := os.ReadFile(fmt.Sprintf("%s/%d/status", procRoot, pid))
	if err != nil {
		return 0, nil, err
	}
	st, err := parseStatus(b)
	if err != nil {
		return 0, nil, err
	}
	cmd, _ := os.ReadFile(fmt.Sprintf("%s/%d/cmdline", procRoot, pid))
	argv = strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00")
	return st.uid, argv, nil
}
