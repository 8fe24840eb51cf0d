package core

import "github.com/perflock/perflock/lockq"

// An Effect is something for the shell to do, in the order returned.
type Effect interface{ effect() }

// ReplyKind says what a [Reply] tells a client.
type ReplyKind uint8

// Replies, each a message of the wire protocol.
const (
	SayQueued    ReplyKind = iota + 1 // in line: Ticket, Position, Holders
	SayWaiting                        // its place in line or who holds changed: Position, Holders
	SayGranted                        // Ticket, Job
	SayPlaced                         // Where
	SayBusy                           // a nonblocking request would wait: Holders
	SayExpired                        // its timeout passed
	SaySkipped                        // its key succeeded too recently: Text
	SayFrozen                         // its (shared) job is frozen
	SayThawed                         // its job runs again
	SayCancelled                      // to a canceller: done (Job); to a job's client: who cancelled (Text)
	SayError                          // Code, Text
)

// Code classifies a SayError reply, as the wire protocol's error codes do.
type Code uint8

// Error codes.
const (
	Invalid     Code = iota + 1 // malformed or out of order
	Denied                      // not this user's
	Limit                       // a limit is reached
	Internal                    // the daemon failed
	Unavailable                 // this daemon or machine cannot do it
)

// Holder describes a job that holds, for a waiter's status line.
type Holder struct {
	Ticket  lockq.Ticket
	User    string
	Mode    lockq.Mode
	Command []string
	Since   Time
	Frozen  bool
}

// Reply sends a message to a client; Last closes the connection once it
// is written.
type Reply struct {
	Conn     ConnID
	Kind     ReplyKind
	Ticket   lockq.Ticket
	UID      uint32 // Queued: the owner, for the rejoin token
	Job      string
	Position int
	Holders  []Holder
	Where    string
	Code     Code
	Text     string
	Last     bool
}

// SetFrozen freezes or thaws the shared side as a whole; the shell steps
// [FreezerDone] when it is done.
type SetFrozen struct{ Frozen bool }

// SetShield raises the shield (On: everything but the exclusive jobs
// confined to the housekeeping CPUs, the earlier settings saved first) or
// lowers it (the earlier settings restored); the shell steps [ShieldDone].
type SetShield struct{ On bool }

// SetBusy says that a local exclusive or group job of the machine now
// waits or holds (Busy, with Reason naming the first such job), or that
// none does any more: a cluster scheduler should send its jobs elsewhere
// meanwhile (Config.TellBusy; perflockd --busy-command). Jobs bound to a
// scheduler's cgroup (Acquire.Bind) do not count.
type SetBusy struct {
	Busy   bool
	Reason string
}

// PinSet pins the CPU frequency at Mode (after restoring any settings a
// failed earlier pin left); the shell steps [PinDone].
type PinSet struct{ Mode string }

// PinRestore puts back the settings from before the pin; the shell steps
// [PinDone].
type PinRestore struct{}

// JobSpec is what a driver is told of a job to place.
type JobSpec struct {
	Ticket     lockq.Ticket
	Name       string // "x-42", "s-43"
	Shared     bool
	User       string
	UID        uint32
	Command    []string
	MaxRuntime Duration
	// Bind, when set, is the cgroup the lease is bound to: nothing is
	// placed, the job is that cgroup's processes, and its place is empty
	// once the cgroup, having had a process, has none (or none came within
	// BindGrace).
	Bind      string
	BindGrace Duration
}

// PlaceJob places pid, the client's held child, for the job: the shell
// checks again that it is the client's child, has the driver place it
// (unless Named: a job of named locks only has no cgroup), takes the first
// figures of a run report when Report is set, and steps [PlaceDone].
type PlaceJob struct {
	Job         JobSpec
	PID         int // the client's child, or the client itself (a job run in place)
	ClientPID   int
	ClientStart uint64 // with ClientPID, the client process (Acquire.PIDStart)
	Named       bool
	Report      bool
}

// WatchEmpty watches a placed job's place; the shell steps [Emptied] once
// it has no process left.
type WatchEmpty struct{ Ticket lockq.Ticket }

// StopJob stops a placed job: SIGTERM to every process, SIGKILL after a
// grace period. Its end comes as [Emptied].
type StopJob struct {
	Ticket lockq.Ticket
	Why    string
}

// EndLease lets go of a job whose lease ended: its watch ends and its place
// is removed.
type EndLease struct{ Ticket lockq.Ticket }

// Record is what a restarted daemon cannot read from a job's cgroup or unit
// name (which say only x or s and the ticket).
type Record struct {
	Mode        lockq.Mode
	Resources   []string
	Preemptible bool
	UID         uint32
	User        string // UID's name (not saved: the shell looks it up)
	ClientPID   int
	PID         int // the job's first process
	// PIDStart is PID's start time where the core knows it (the client
	// placed itself: its start time was read with its request); 0: the
	// shell reads it.
	PIDStart uint64
	Command  []string
	Key      string
	Governor string
	// MaxRuntime, when positive, is how long the job may run from Placed.
	MaxRuntime Duration
	Placed     Time
	Bind       string // the cgroup the lease is bound to, if any
	Owner      string // with Bind, the user shown
}

// SaveRecord saves a placed job's record; DropRecord removes it once the
// lease ended.
type SaveRecord struct {
	Ticket lockq.Ticket
	Record Record
}

// DropRecord removes a job's record.
type DropRecord struct{ Ticket lockq.Ticket }

// Completed: a keyed job completed successfully at At (perfrun --key).
type Completed struct {
	UID uint32
	Key string
	At  Time
}

// SendReport answers a job's done with its run report.
type SendReport struct {
	Conn       ConnID
	Ticket     lockq.Ticket
	Job        string
	FrozenJobs int // shared jobs frozen when it was placed
	// Shielded: the job ran under the shield; else NoShield says why ("":
	// the daemon has no shield).
	Shielded bool
	NoShield string
}

// Level is a log record's level.
type Level int8

// Levels, as log/slog numbers them.
const (
	Debug Level = -4
	Info  Level = 0
	Warn  Level = 4
	Error Level = 8
)

// Log is a log record: a message and key-value pairs (values are strings,
// numbers, [Duration]s or errors).
type Log struct {
	Level Level
	Msg   string
	Attrs []any
}

// Observation names an event the daemon's metrics count.
type Observation uint8

// Observations.
const (
	ObserveGranted   Observation = iota + 1 // Waited
	ObserveBusy                             // a nonblocking request refused
	ObserveTimedOut                         // a timeout passed while waiting
	ObserveCancelled                        // Reason
	ObserveExited                           // a lease ended: Result
)

// Why a request was cancelled.
const (
	CancelClient  = "client"  // its client hung up while it waited
	CancelUser    = "cancel"  // wholock --cancel
	CancelReplace = "replace" // a newer job of its key with --replace
	CancelExpire  = "expire"  // a newer job of its key with --expire-after
)

// How a job ended, from the status its client reported with done.
const (
	ResultSuccess = "success" // status 0
	ResultFailure = "failure" // 1…127
	ResultSignal  = "signal"  // 128 and above: died of a signal, as shells report it
	ResultUnknown = "unknown" // no status: the client was gone (or the job adopted)
)

// Observe tells the metrics of an event.
type Observe struct {
	What   Observation
	Kind   lockq.Kind
	Waited Duration
	Reason string
	Result string
}

func (Reply) effect()      {}
func (SetBusy) effect()    {}
func (SetFrozen) effect()  {}
func (PinSet) effect()     {}
func (SetShield) effect()  {}
func (PinRestore) effect() {}
func (PlaceJob) effect()   {}
func (WatchEmpty) effect() {}
func (StopJob) effect()    {}
func (EndLease) effect()   {}
func (SaveRecord) effect() {}
func (DropRecord) effect() {}
func (Completed) effect()  {}
func (SendReport) effect() {}
func (Log) effect()        {}
func (Observe) effect()    {}
