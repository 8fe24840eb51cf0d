package core

import (
	"math"

	"github.com/perflock/perflock/lockq"
)

// Time is a point on the shell's clock in nanoseconds: Unix time that
// advances monotonically (the shell's start, read from the wall clock, plus
// the monotonic time since). It is above zero.
type Time = lockq.Time

// Duration is a span of Time in nanoseconds.
type Duration int64

// Common durations.
const (
	Millisecond Duration = 1e6
	Second      Duration = 1e9
	Minute               = 60 * Second
	Hour                 = 60 * Minute
)

// Add is t moved by d, saturated: a client's huge duration means "never",
// not a time in the past.
func Add(t Time, d Duration) Time {
	if d > 0 && t > Time(math.MaxInt64)-Time(d) {
		return Time(math.MaxInt64)
	}
	return t + Time(d)
}

// Since is how long before now t was.
func Since(t, now Time) Duration { return Duration(now - t) }

// ConnID names a client connection; the shell picks them, never 0.
type ConnID uint64

// An Event is something that happened, stepped into the core with [Core.Step].
type Event interface{ event() }

// Acquire: a client asks for a lease. The shell has checked the message's
// form, resolved the user's name, looked up the key's last success and,
// for a rejoin, the ticket's token.
type Acquire struct {
	Conn ConnID
	UID  uint32
	User string
	PID  int // the client's
	// PIDStart is the client's start time (clock ticks since boot, as
	// /proc/PID/stat has it), read when it connected: with PID it names
	// the client for good, should it ask to be placed itself.
	PIDStart    uint64
	Now         Time
	Mode        string // as lockq.ParseMode reads it
	Resources   []string
	Preemptible bool
	Nonblock    bool
	Timeout     Duration // 0: wait for ever
	MaxRuntime  Duration // 0: no limit
	Command     []string
	Key         string
	IfElapsed   Duration // with Key: skip if it succeeded this recently
	LastSuccess Time     // with Key: its last successful completion, 0 if none
	Replace     bool
	ExpireAfter Duration
	Report      bool
	Governor    string       // a canonical governor mode; "" for none
	Rejoin      lockq.Ticket // a waiter of an earlier daemon rejoins with its ticket (token checked)
	// Within is the job the client runs in, if any (found from its cgroup,
	// or named by the client): a request that would wait for it is refused.
	Within lockq.Ticket
	// PlaceSelf: once granted, the client itself (PID, PIDStart) is placed
	// at once, as if it had sent Place with its own pid.
	PlaceSelf bool
	// Bind (the shell checked that the client may) binds the lease to the
	// cgroup at this path instead of to a process of the client: once
	// granted it is placed there at once (see JobSpec.Bind). Owner, when
	// set, is the user shown for the job.
	Bind      string
	BindGrace Duration
	Owner     string
}

// Place: the client asks to place its held child, pid (the shell checked it
// is the client's own).
type Place struct {
	Conn ConnID
	PID  int
	Now  Time
}

// Done: the client reports its job's exit status.
type Done struct {
	Conn   ConnID
	Status int
	Now    Time
}

// Closed: a client connection is gone.
type Closed struct {
	Conn ConnID
	Now  Time
}

// Cancel: wholock --cancel of a job, by a user.
type Cancel struct {
	Conn   ConnID
	UID    uint32
	User   string
	Ticket lockq.Ticket
	Now    Time
}

// Tick: time passed. The shell steps one at [Core.NextWake] and once a
// second (waiters hear of their place in line then).
type Tick struct{ Now Time }

// FreezerDone: the freeze or thaw asked for with [SetFrozen] ended.
type FreezerDone struct {
	Err error
	Now Time
}

// PinDone: the [PinSet] or [PinRestore] asked for ended.
type PinDone struct {
	Err error
	Now Time
}

// ShieldDone: the [SetShield] asked for ended.
type ShieldDone struct {
	Err error
	Now Time
}

// PlaceDone: the [PlaceJob] of a job ended.
type PlaceDone struct {
	Ticket lockq.Ticket
	Where  string // the cgroup or unit, "" when the job has none
	// NativeMaxRuntime: the driver stops the job at its max runtime itself.
	NativeMaxRuntime bool
	Err              error
	Now              Time
}

// Emptied: no process of a placed job is left (after [WatchEmpty]).
type Emptied struct {
	Ticket lockq.Ticket
	Now    Time
}

// Adopt: at start, before any other event, the jobs an earlier daemon left
// running, and the CPU frequency pin it may have left.
type Adopt struct {
	Jobs   []Adopted
	Pin    PinLeft
	Shield ShieldLeft
	Now    Time
}

// Adopted is a running job a restarted daemon found: by its cgroup or
// scope, whose name says x-N or s-N, or (Process) by its first process,
// from its record, where it has no cgroup (named locks, the none driver).
type Adopted struct {
	Ticket  lockq.Ticket
	Shared  bool // its name (or record) says s-N
	Process bool
	Where   string // its cgroup or unit
	// NativeMaxRuntime: the driver stops the job at its max runtime itself.
	NativeMaxRuntime bool
	// From the job's first process, when the record says nothing.
	UID     uint32
	User    string
	PID     int
	Command []string
	// Record, when not nil, is what the earlier daemon saved of the job.
	Record *Record
}

// PinLeft is what an earlier daemon's CPU frequency state file says.
type PinLeft struct {
	Found bool
	Mode  string // the mode pinned, when found
	Err   error  // the file could not be read
}

func (Acquire) event()     {}
func (Place) event()       {}
func (Done) event()        {}
func (Closed) event()      {}
func (Cancel) event()      {}
func (Tick) event()        {}
func (FreezerDone) event() {}
func (PinDone) event()     {}
func (ShieldDone) event()  {}
func (PlaceDone) event()   {}
func (Emptied) event()     {}
func (Adopt) event()       {}
