package core

import (
	"slices"

	"github.com/perflock/perflock/lockq"
)

// Config sets a Core's rules.
type Config struct {
	// Policy for preemptible shared jobs; Drain where the driver cannot freeze.
	Policy lockq.Policy
	// CanFreeze: the driver can freeze the shared side.
	CanFreeze bool
	// MaxWaiting caps each user's waiting requests.
	MaxWaiting int
	// MaxExclusiveRuntime, when positive, caps every exclusive or group job.
	MaxExclusiveRuntime Duration
	// MaxPlacing bounds the placements under way at once (default 2).
	MaxPlacing int
	// Shield: the daemon confines other work to housekeeping CPUs while an
	// exclusive or group job of the machine runs (perflockd --shield).
	Shield bool
	// ThawRetry is how long after a failed thaw (or shield lowering) the
	// next one starts (default 1s).
	ThawRetry Duration
	// TicketMark: every ticket from now on is larger (the earlier daemon's mark).
	TicketMark lockq.Ticket
	// Rejoinable are the tickets (and their owners) of the requests that
	// waited when an earlier daemon stopped: each may rejoin once, by its
	// owner, until RejoinUntil. GraceUntil, when set, parks new requests
	// until then so that those waiters rejoin first.
	Rejoinable              map[lockq.Ticket]uint32
	GraceUntil, RejoinUntil Time
	// RejoinAfter: the tickets above it, up to TicketMark, were handed out
	// after the earlier daemon last saved its waiters (it crashed): each
	// may rejoin once too (its token names its owner).
	RejoinAfter lockq.Ticket
	// TellBusy: the shell wants SetBusy effects (perflockd --busy-command).
	TellBusy bool
}

// Core is the daemon's job lifecycle. One goroutine owns it and steps it.
type Core struct {
	cfg     Config
	q       *lockq.Queue
	jobs    map[lockq.Ticket]*job
	byConn  map[ConnID]*job
	waiting map[uint32]int // waiting jobs per user (kept by setPhase)
	parked  []parked       // new requests during the rejoin grace
	frz     freezer
	pin     pin
	shd     shield
	turn    turn
	// limits: the running jobs the core stops at their max runtime.
	limits map[lockq.Ticket]*job
	busy   busy
	// rejoined: tickets above RejoinAfter that have rejoined.
	rejoined map[lockq.Ticket]bool
	gen      uint64 // counts changes a listing would show
	dirty    bool   // waiters may need to hear of their place
	out      []Effect
}

// New returns a Core with nothing adopted.
func New(cfg Config) *Core {
	if cfg.MaxPlacing <= 0 {
		cfg.MaxPlacing = 2
	}
	if cfg.ThawRetry <= 0 {
		cfg.ThawRetry = Second
	}
	if !cfg.CanFreeze {
		cfg.Policy = lockq.Drain
	}
	c := &Core{
		cfg: cfg, q: lockq.New(cfg.Policy),
		jobs: map[lockq.Ticket]*job{}, byConn: map[ConnID]*job{}, waiting: map[uint32]int{},
		limits: map[lockq.Ticket]*job{}, rejoined: map[lockq.Ticket]bool{}, busy: busy{jobs: map[lockq.Ticket]*job{}},
		pin: pin{users: map[lockq.Ticket]bool{}}, shd: shield{users: map[lockq.Ticket]bool{}},
	}
	c.q.Reserve(cfg.TicketMark)
	return c
}

// Step takes one event and returns what the shell must do, in order.
func (c *Core) Step(e Event) []Effect {
	c.out = nil
	switch e := e.(type) {
	case Acquire:
		c.acquire(e)
	case Place:
		c.place(e)
	case Done:
		c.done(e)
	case Closed:
		c.closed(e)
	case Cancel:
		c.cancel(e)
	case Tick:
		c.tick(e.Now)
	case FreezerDone:
		c.freezerDone(e)
	case PinDone:
		c.pinDone(e)
	case ShieldDone:
		c.shieldDone(e)
	case PlaceDone:
		c.placeDone(e)
	case Emptied:
		c.emptied(e)
	case Adopt:
		c.adopt(e)
	}
	c.steerBusy()
	out := c.out
	c.out = nil
	return out
}

// NextWake is when the core next needs a [Tick], if ever: a waiter's
// deadline, a job's max runtime, the end of the rejoin grace, or a thaw to
// retry.
func (c *Core) NextWake() (Time, bool) {
	var at Time
	earliest := func(t Time) {
		if t != 0 && (at == 0 || t < at) {
			at = t
		}
	}
	if d, ok := c.q.NextDeadline(); ok {
		earliest(d)
	}
	for _, j := range c.limits {
		earliest(j.stopAt)
	}
	earliest(c.cfg.GraceUntil)
	if len(c.cfg.Rejoinable) > 0 {
		earliest(c.cfg.RejoinUntil + 1)
	}
	earliest(c.frz.retryAt)
	earliest(c.shd.retryAt)
	return at, at != 0
}

// Gen counts the changes to what a listing shows: when it moved, the shell
// has something new to tell watchers and the service manager.
func (c *Core) Gen() uint64 { return c.gen }

// LastTicket is the last ticket handed out (or reserved).
func (c *Core) LastTicket() lockq.Ticket { return c.q.Last() }

// Idle reports whether no job holds, waits or is parked.
func (c *Core) Idle() bool { return len(c.jobs) == 0 && len(c.parked) == 0 }

// Waiter is a request that may rejoin after a restart, and its owner.
type Waiter struct {
	Ticket lockq.Ticket
	UID    uint32
}

// Waiters lists the requests that would rejoin after a restart: those
// waiting and those parked with a ticket, in ticket order, then those of an
// earlier daemon that may rejoin still.
func (c *Core) Waiters() []Waiter {
	var out []Waiter
	for _, t := range sortedKeys(c.jobs) {
		if j := c.jobs[t]; j.phase == Waiting {
			out = append(out, Waiter{t, j.uid})
		}
	}
	for _, p := range c.parked {
		if p.ticket != 0 {
			out = append(out, Waiter{p.ticket, p.a.UID})
		}
	}
	// Those of an earlier daemon that have yet to rejoin may still.
	for _, t := range sortedKeys(c.cfg.Rejoinable) {
		out = append(out, Waiter{t, c.cfg.Rejoinable[t]})
	}
	return out
}

// Policy is the policy in force (Drain where the driver cannot freeze).
func (c *Core) Policy() lockq.Policy { return c.cfg.Policy }

func (c *Core) emit(e Effect) { c.out = append(c.out, e) }

func (c *Core) log(l Level, msg string, attrs ...any) {
	c.emit(Log{Level: l, Msg: msg, Attrs: attrs})
}

func (c *Core) reply(r Reply) {
	if r.Conn != 0 {
		c.emit(r)
	}
}

func (c *Core) fail(conn ConnID, code Code, text string) {
	c.reply(Reply{Conn: conn, Kind: SayError, Code: code, Text: text, Last: true})
}

// changed notes a change a listing shows.
func (c *Core) changed() {
	c.gen++
	c.dirty = true
}

// tick acts on what is due at now.
func (c *Core) tick(now Time) {
	c.apply(c.q.Expire(now), now)
	for _, t := range sortedKeys(c.limits) {
		if j := c.limits[t]; j.stopAt <= now {
			delete(c.limits, t)
			c.log(Info, "max runtime reached: stopping job", "job", j.name, "max_runtime", j.maxRuntime)
			c.emit(StopJob{Ticket: t, Why: "max runtime reached"})
		}
	}
	if c.cfg.GraceUntil != 0 && now >= c.cfg.GraceUntil {
		c.unpark(now)
	}
	if len(c.cfg.Rejoinable) > 0 && now > c.cfg.RejoinUntil {
		c.cfg.Rejoinable = nil
		c.changed()
	}
	if c.frz.retryAt != 0 && now >= c.frz.retryAt {
		c.frz.retryAt = 0
		c.steerFreezer(now)
	}
	if c.shd.retryAt != 0 && now >= c.shd.retryAt {
		c.shd.retryAt = 0
		c.steerShield(now)
	}
	c.broadcast()
}

func sortedKeys[V any](m map[lockq.Ticket]V) []lockq.Ticket {
	ts := make([]lockq.Ticket, 0, len(m))
	for t := range m {
		ts = append(ts, t)
	}
	slices.Sort(ts)
	return ts
}
