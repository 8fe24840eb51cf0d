package core

import (
	"slices"

	"github.com/perflock/perflock/internal/cmdline"
	"github.com/perflock/perflock/lockq"
)

// busy is whether local work claims the whole machine: the exclusive and
// group jobs of the machine, waiting or holding, that are not bound to a
// cluster scheduler's cgroup. The shell hears when that starts and ends
// (SetBusy), not of every job.
type busy struct {
	jobs map[lockq.Ticket]*job
	told bool // the last SetBusy said Busy
}

// busyAdd counts j in if it claims the machine locally.
func (c *Core) busyAdd(j *job) {
	if c.cfg.TellBusy && !j.shared() && j.bind == "" && slices.Contains(j.resources, lockq.Machine) {
		c.busy.jobs[j.ticket] = j
	}
}

// steerBusy tells the shell when the machine became busy or idle.
func (c *Core) steerBusy() {
	now := len(c.busy.jobs) > 0
	if now == c.busy.told {
		return
	}
	c.busy.told = now
	if !now {
		c.emit(SetBusy{})
		return
	}
	j := c.busy.jobs[sortedKeys(c.busy.jobs)[0]]
	c.emit(SetBusy{Busy: true, Reason: "perflock: " + j.mode.String() + " job " + j.name + " of " + j.user + ": " +
		cmdline.Short(j.command, 60)})
}
