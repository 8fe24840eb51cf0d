package core

import (
	"cmp"
	"slices"

	"github.com/perflock/perflock/internal/jobname"
	"github.com/perflock/perflock/lockq"
)

// adopt re-creates the jobs an earlier daemon left running, before
// anything is granted. If an exclusive job runs, the shared jobs stay (or
// are made) frozen; otherwise they are thawed.
func (c *Core) adopt(e Adopt) {
	found := slices.Clone(e.Jobs)
	// Exclusive jobs first: a suspended shared holder adopted while no
	// exclusive one holds would be resumed at once.
	slices.SortFunc(found, func(a, b Adopted) int {
		if a.Shared != b.Shared {
			if a.Shared {
				return 1
			}
			return -1
		}
		return cmp.Compare(a.Ticket, b.Ticket)
	})
	exclusive := slices.ContainsFunc(found, func(a Adopted) bool { return !a.Shared })
	freeze := exclusive && c.cfg.Policy == lockq.Freeze
	if c.cfg.CanFreeze {
		c.frz.busy, c.frz.target = true, freeze
		c.emit(SetFrozen{Frozen: freeze})
	}
	// The queue's actions are carried out once all are adopted: midway, the
	// suspensions are incomplete and would thaw the shared jobs for a moment.
	var acts []lockq.Action
	var holders []*job
	for _, a := range found {
		j := c.adopted(a, e.Now)
		suspended := j.preemptible && freeze
		r := lockq.Request{Mode: j.mode, Resources: j.resources, Preemptible: j.preemptible}
		more, err := c.q.Adopt(j.ticket, r, suspended)
		if err != nil {
			c.log(Error, "adopting job", "job", j.name, "err", err)
			continue
		}
		c.jobs[j.ticket] = j
		c.busyAdd(j)
		j.heardFrozen = suspended
		if j.stopAt != 0 && !a.NativeMaxRuntime {
			c.limits[j.ticket] = j
		}
		if !j.shared() {
			holders = append(holders, j)
		}
		c.log(Info, "adopted running job", "job", j.name, "user", j.user, "where", a.Where, "frozen", suspended)
		c.emit(WatchEmpty{Ticket: j.ticket})
		acts = append(acts, more...)
	}
	c.changed()
	c.adoptPin(e.Pin, holders, e.Now)
	c.adoptShield(e.Shield, holders, e.Now)
	c.apply(acts, e.Now)
}

// adopted is the job of a, whole when its record agrees with what the
// driver found.
func (c *Core) adopted(a Adopted, now Time) *job {
	mode, kind := lockq.ExclusiveMode(), jobname.Exclusive
	if a.Shared {
		mode, kind = lockq.SharedMode(), jobname.Shared
	}
	j := &job{ticket: a.Ticket, name: jobname.Format(kind, uint64(a.Ticket)), phase: Running, mode: mode,
		resources: []string{lockq.Machine}, preemptible: a.Shared, since: now, placedAt: now, where: a.Where,
		uid: a.UID, user: a.User, childPID: a.PID, command: a.Command}
	if j.user == "" {
		j.user = "?"
	}
	if r := a.Record; r != nil {
		j.recorded = true // removed with the lease, read or not
		if why := recordDisagrees(r, a); why != "" {
			c.log(Warn, "ignoring the job's record", "job", j.name, "err", why)
		} else {
			j.mode, j.resources, j.preemptible, j.key, j.gov = r.Mode, r.Resources, r.Preemptible, r.Key, r.Governor
			j.uid, j.user, j.clientPID, j.command = r.UID, r.User, r.ClientPID, r.Command
			j.maxRuntime = r.MaxRuntime
			if j.bind = r.Bind; r.Owner != "" {
				j.user = r.Owner
			}
			if r.Placed != 0 {
				j.placedAt = r.Placed
			}
		}
	}
	if limit := c.cfg.MaxExclusiveRuntime; limit > 0 && !j.shared() && (j.maxRuntime <= 0 || j.maxRuntime > limit) {
		j.maxRuntime = limit
	}
	if j.maxRuntime > 0 {
		j.stopAt = Add(j.placedAt, j.maxRuntime)
	}
	return j
}

// recordDisagrees says why a record cannot be the adopted job's, or "".
func recordDisagrees(r *Record, a Adopted) string {
	switch {
	case (r.Mode.Kind == lockq.Shared) != a.Shared:
		return "the record says " + r.Mode.String() + ", the driver's name " + map[bool]string{true: "shared", false: "exclusive"}[a.Shared]
	case len(r.Resources) == 0:
		return "the record names no resource"
	case !a.Process && !slices.Contains(r.Resources, lockq.Machine):
		return "the record's resources lack " + lockq.Machine + ", yet the job has a cgroup"
	case r.Preemptible && r.Mode.Kind != lockq.Shared:
		return "the record makes a " + r.Mode.String() + " job preemptible"
	}
	return ""
}
