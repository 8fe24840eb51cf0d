package core

import (
	"slices"
	"strconv"
	"strings"

	"github.com/perflock/perflock/lockq"
)

// JobView is one job as a listing shows it.
type JobView struct {
	Ticket    lockq.Ticket
	Name      string
	Phase     Phase
	Mode      lockq.Mode
	Resources []string
	User      string
	UID       uint32
	ClientPID int
	ChildPID  int
	Command   []string
	Governor  string
	Where     string
	Since     Time
	Position  int                // waiters, from 1
	Suspend   lockq.SuspendState // holders
	Shielded  bool               // it runs under the shield
}

// Jobs lists the holders in ticket order, then the waiters in line.
func (c *Core) Jobs() []JobView {
	view := c.q.View()
	out := make([]JobView, 0, len(view))
	for _, e := range view {
		j := c.jobs[e.Ticket]
		if j == nil {
			continue
		}
		out = append(out, JobView{
			Ticket: j.ticket, Name: j.name, Phase: j.phase, Mode: j.mode, Resources: j.resources,
			User: j.user, UID: j.uid, ClientPID: j.clientPID, ChildPID: j.childPID, Command: j.command,
			Governor: j.gov, Where: j.where, Since: j.since, Position: e.Position, Suspend: e.Suspend,
			Shielded: c.shd.users[j.ticket] && c.shd.up && j.phase >= Placing,
		})
	}
	return out
}

// maxListedHolders bounds the holders a waiter hears of.
const maxListedHolders = 3

// holdersFor lists the holders in j's way: at most maxListedHolders.
func (c *Core) holdersFor(j *job) []Holder {
	var out []Holder
	for _, e := range c.q.Holders() {
		h := c.jobs[e.Ticket]
		if h == nil || h == j || !overlaps(h.resources, j.resources) || h.mode.Compatible(j.mode) {
			continue
		}
		out = append(out, Holder{Ticket: h.ticket, User: h.user, Mode: h.mode, Command: h.command,
			Since: h.since, Frozen: e.Suspend == lockq.IsSuspended})
		if len(out) == maxListedHolders {
			break
		}
	}
	return out
}

func overlaps(a, b []string) bool {
	return slices.ContainsFunc(a, func(x string) bool { return slices.Contains(b, x) })
}

// holdersKey tells whether a waiter's holders changed.
func holdersKey(hs []Holder) string {
	var b strings.Builder
	for _, h := range hs {
		b.WriteString(strconv.FormatUint(uint64(h.Ticket), 10))
		if h.Frozen {
			b.WriteByte('f')
		}
		b.WriteByte(' ')
	}
	return b.String()
}

// broadcast tells the waiters whose place in line or holders changed.
func (c *Core) broadcast() {
	if !c.dirty {
		return
	}
	c.dirty = false
	_, waiting := c.q.Len()
	if waiting == 0 {
		return
	}
	for _, e := range c.q.View() {
		j := c.jobs[e.Ticket]
		if e.Holding || j == nil || j.conn == 0 {
			continue
		}
		hs := c.holdersFor(j)
		key := holdersKey(hs)
		if e.Position == j.lastPos && key == j.lastHold {
			continue
		}
		j.lastPos, j.lastHold = e.Position, key
		c.reply(Reply{Conn: j.conn, Kind: SayWaiting, Position: e.Position, Holders: hs})
	}
}
