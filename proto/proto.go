// Package proto is perflock's wire protocol between the commands and
// perflockd: newline-delimited JSON objects over a Unix stream socket, each
// at most [MaxMessage] bytes, with a version handshake. docs/protocol.md is
// its manual; this package is its definition.
package proto

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// Version is the protocol version this package speaks.
const Version = 1

// MaxMessage bounds one encoded message, newline included.
const MaxMessage = 64 << 10

// Limits on request contents, checked by Validate.
const (
	MaxArgs      = 256  // words in a command line
	MaxArgBytes  = 4096 // bytes in one word, as sent (longer words are cut by the client)
	MaxResources = 16
	MaxNameBytes = 128 // a resource name
	// MaxGovernorBytes bounds an acquire's governor ("performance", "70%").
	MaxGovernorBytes = 16
)

// Message types. Client to daemon: Hello, Acquire, Place, Done, List, Watch,
// Cancel. Daemon to client: Hello, Queued, Waiting, Granted, Placed, Busy,
// Expired, Skipped, Frozen, Thawed, Report, List, Cancelled, Error.
const (
	THello   = "hello"
	TAcquire = "acquire"
	TPlace   = "place"
	TDone    = "done"
	TList    = "list"
	TWatch   = "watch" // the listing now and whenever the queue changes, until the client closes
	TCancel  = "cancel"

	TQueued  = "queued"
	TWaiting = "waiting"
	TGranted = "granted"
	TPlaced  = "placed"
	TBusy    = "busy"
	TExpired = "expired"
	// TSkipped: the request's key last completed successfully within its
	// if_elapsed_ms; Message says when. The daemon closes.
	TSkipped = "skipped"
	TFrozen  = "frozen"
	TThawed  = "thawed"
	// TCancelled: to a canceller, the cancel is done; to the cancelled
	// job's client, who cancelled it (Message).
	TCancelled = "cancelled"
	// TReport: the answer to done for a request with Report set: how clean
	// the job's run was (Figures).
	TReport = "report"
	TError  = "error"
)

// Error codes carried by TError messages.
const (
	CodeVersion  = "version"  // unsupported protocol version
	CodeInvalid  = "invalid"  // malformed or out-of-order message
	CodeDenied   = "denied"   // not allowed for this user or pid
	CodeLimit    = "limit"    // a per-user or daemon limit is reached
	CodeInternal = "internal" // the daemon failed; the message says how
	// CodeUnavailable: this daemon or machine cannot do what was asked,
	// such as --governor where there is no cpufreq; the message says why.
	CodeUnavailable = "unavailable"
)

// Msg is one message. Type says which of the other fields are meaningful;
// docs/protocol.md lists them per type. Unknown fields are ignored, so later
// versions may add fields.
type Msg struct {
	Type string `json:"type"`

	// hello (both ways)
	Version int    `json:"version,omitempty"`
	Client  string `json:"client,omitempty"` // client → daemon: program name
	Driver  string `json:"driver,omitempty"` // daemon → client
	Policy  string `json:"policy,omitempty"` // daemon → client
	PID     int    `json:"pid,omitempty"`    // hello: daemon pid; place: the child to place, or the client itself
	// InPlace (daemon → client hello): the daemon places a client itself,
	// which then execs its job in place; an older daemon places children
	// only.
	InPlace bool `json:"in_place,omitempty"`
	// PlaceSelf (acquire): place the client itself as soon as the request
	// is granted, with no place message: granted is then followed by
	// placed (or an error), and the client execs its job. In the daemon's
	// hello: it does so; an older daemon ignores the field, and the client
	// sends place after granted.
	PlaceSelf bool `json:"place_self,omitempty"`
	// BindLeases (daemon → client hello): the daemon takes an acquire's
	// bind; an older one would take the request as an ordinary one.
	BindLeases bool `json:"bind_leases,omitempty"`

	// acquire
	Mode        string   `json:"mode,omitempty"` // "exclusive", "shared", "group(ID)"
	Resources   []string `json:"resources,omitempty"`
	Preemptible bool     `json:"preemptible,omitempty"`
	Nonblock    bool     `json:"nonblock,omitempty"`
	TimeoutMS   int64    `json:"timeout_ms,omitempty"` // 0: wait forever
	// MaxRuntimeMS stops the job (SIGTERM, then SIGKILL) once it has run
	// this long; 0: no limit.
	MaxRuntimeMS int64    `json:"max_runtime_ms,omitempty"`
	Command      []string `json:"command,omitempty"`
	// Key names the job across runs (per user): the daemon keeps when it
	// last completed successfully, and finds other jobs of the same key.
	Key string `json:"key,omitempty"`
	// IfElapsedMS (with Key): skip the job if Key last completed
	// successfully less than this long ago; 0: always run.
	IfElapsedMS int64 `json:"if_elapsed_ms,omitempty"`
	// Replace (with Key): cancel or stop older jobs of the same key and
	// owner first: the newest instance wins.
	Replace bool `json:"replace,omitempty"`
	// ExpireAfterMS (with Key): stop a job of the same key and owner that
	// has held longer than this; 0: never.
	ExpireAfterMS int64 `json:"expire_after_ms,omitempty"`
	// Report asks for a run report: the daemon takes its figures when the
	// job is placed and answers done with a report message.
	Report bool `json:"report,omitempty"`
	// Governor pins the CPU frequency while the job runs: "performance",
	// or a percentage of the highest frequency such as "70%"; "" or
	// "none" leaves it alone. Exclusive and group jobs of the machine only.
	Governor string `json:"governor,omitempty"`
	// Within (acquire) names the job the client runs in, if any: perfrun
	// and pls set PERFLOCK_JOB in a job's environment and send it back from
	// a client started inside the job. The daemon refuses a request that
	// would wait for the job it comes from.
	Within string `json:"within,omitempty"`
	// Bind (acquire; root or a --bind-users user only) binds the lease to
	// processes that are not the client's: those of the cgroup at this
	// cgroup2 path ("/system.slice/slurmstepd.scope/job_42"), which a
	// cluster scheduler made. Once granted, placed follows at once and the
	// client may leave: the lease ends when the cgroup, having had a
	// process, has none left (or is removed), when the job is cancelled, or
	// when it never had a process within BindGraceMS.
	Bind string `json:"bind,omitempty"`
	// BindGraceMS (with Bind): how long the cgroup may stay empty, or not
	// exist, after the grant; 0: a minute.
	BindGraceMS int64 `json:"bind_grace_ms,omitempty"`
	// Owner (with Bind): the user the bound processes run for, shown in
	// listings instead of the client's.
	Owner string `json:"owner,omitempty"`

	// queued, waiting, granted, busy; acquire when rejoining; cancel
	Ticket uint64 `json:"ticket,omitempty"`
	// Token (queued): the secret that lets this client rejoin with Ticket
	// after the daemon restarts; sent back in a rejoining acquire.
	Token    string   `json:"token,omitempty"`
	Position int      `json:"position,omitempty"`
	Holders  []Holder `json:"holders,omitempty"`
	Job      string   `json:"job,omitempty"` // granted: the job's name, e.g. "x-42"

	// placed
	Where string `json:"where,omitempty"` // cgroup path or unit, "" when the driver has none

	// done
	Status int `json:"status,omitempty"`

	// report
	Figures *Report `json:"figures,omitempty"`

	// list: a listing comes in as many list messages as it needs, each
	// within MaxMessage; all but the last have More set.
	Entries []Entry `json:"entries,omitempty"`
	More    bool    `json:"more,omitempty"`

	// error
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// Holder summarises a job that holds, for a waiter's status line.
type Holder struct {
	User    string `json:"user"`
	Mode    string `json:"mode"`
	Command string `json:"command"`
	HeldMS  int64  `json:"held_ms"`
	Frozen  bool   `json:"frozen,omitempty"`
}

// Entry is one row of the queue listing.
type Entry struct {
	Ticket    uint64   `json:"ticket"`
	Job       string   `json:"job"`
	State     string   `json:"state"` // "running", "frozen", "freezing", "granted", "waiting"
	Mode      string   `json:"mode"`
	Resources []string `json:"resources"`
	User      string   `json:"user"`
	UID       uint32   `json:"uid"`
	PID       int      `json:"pid"`             // the client's pid
	ChildPID  int      `json:"child_pid"`       // the job's pid once placed
	Position  int      `json:"position"`        // waiters only, from 1
	SinceMS   int64    `json:"since_unix_ms"`   // when it started waiting or holding
	ForMS     int64    `json:"for_ms"`          // how long it has been in that state
	Where     string   `json:"where,omitempty"` // cgroup path or unit
	Command   []string `json:"command"`
	// Governor is the CPU frequency the job asked for (--governor), pinned
	// while it runs: "performance" or a percentage such as "70%".
	Governor string `json:"governor,omitempty"`
	// Shielded: the job runs under perflockd's shield (--shield): all other
	// work is confined to the housekeeping CPUs.
	Shielded bool `json:"shielded,omitempty"`
}

// Report is a run report: how clean an exclusive (or group) job's run was,
// measured from its placement to its done. A figure that cannot be measured
// is absent (nil), and Unavailable says why, under the figure's JSON name.
// Times are in microseconds.
type Report struct {
	Job    string `json:"job"`
	Driver string `json:"driver"`
	Policy string `json:"policy"`
	WallUS int64  `json:"wall_us"`
	// OnlineCPUs and MachineBusyUS: the machine's busy CPU time during the
	// run (user, nice, system, irq, softirq and steal in /proc/stat, summed
	// over its online CPUs; a tick's resolution per CPU).
	OnlineCPUs    int    `json:"online_cpus,omitempty"`
	MachineBusyUS *int64 `json:"machine_busy_us,omitempty"`
	// JobCgroup is the cgroup directory whose figures are the job's: its
	// own, or under systemd perflock-exclusive.slice, which outlives the
	// job's scope (and holds the job alone, or its group).
	JobCgroup string `json:"job_cgroup,omitempty"`
	// JobCPU: the job's own CPU time (its cgroup's cpu.stat).
	JobCPU *ReportCPU `json:"job_cpu,omitempty"`
	// Outside: CPU time used outside the job during the run.
	Outside *ReportOutside `json:"outside,omitempty"`
	// Pressure: the job cgroup's CPU pressure (PSI) during the run.
	Pressure *ReportPressure `json:"pressure,omitempty"`
	// Throttling: the job cgroup's CPU throttling during the run (only
	// with the cpu controller enabled for it).
	Throttling *ReportThrottling `json:"throttling,omitempty"`
	// Shared: whether the shared (pls) jobs stayed frozen.
	Shared *ReportShared `json:"shared,omitempty"`
	// Shield: the job ran under perflockd's shield, and where the CPU time
	// used outside the job went.
	Shield *ReportShield `json:"shield,omitempty"`
	// Unavailable maps the JSON name of each absent figure to the reason.
	Unavailable map[string]string `json:"unavailable,omitempty"`
}

// ReportCPU is CPU time used.
type ReportCPU struct {
	TotalUS  int64 `json:"total_us"`
	UserUS   int64 `json:"user_us"`
	SystemUS int64 `json:"system_us"`
}

// ReportOutside is the CPU time used outside the job during its run: the
// machine's busy time minus the job's (0 when the difference is within the
// ticks' resolution), and that as a share of online CPUs × wall time.
type ReportOutside struct {
	CPUUS int64   `json:"cpu_us"`
	Share float64 `json:"share"` // 0…1
}

// ReportPressure is the growth of the totals in the job cgroup's
// cpu.pressure: time in which some (full: all) of its runnable tasks waited
// for a CPU. FullUS is absent on kernels without the full line (before 5.13).
type ReportPressure struct {
	SomeUS int64  `json:"some_us"`
	FullUS *int64 `json:"full_us,omitempty"`
}

// ReportThrottling is the growth of nr_throttled and throttled_usec.
type ReportThrottling struct {
	NrThrottled uint64 `json:"nr_throttled"`
	ThrottledUS int64  `json:"throttled_us"`
}

// ReportShield is the shield during a run: the housekeeping CPUs everything
// else was confined to, and the CPU time used outside the job split by
// where it ran (from the per-CPU lines of /proc/stat): on the job's CPUs
// (all but the housekeeping ones; at least this much, as the job's own
// time cannot be split by CPU) and on the housekeeping CPUs (the rest).
type ReportShield struct {
	HousekeepingCPUs        string `json:"housekeeping_cpus"`
	OutsideOnJobCPUsUS      int64  `json:"outside_on_job_cpus_us"`
	OutsideOnHousekeepingUS int64  `json:"outside_on_housekeeping_us"`
}

// ReportShared says what the shared side did during the run.
// FrozenThroughout is true only if its CPU time did not grow at all: a
// correct freeze uses none (and with no shared job, none ran).
type ReportShared struct {
	FrozenJobs       int   `json:"frozen_jobs"` // shared jobs frozen when the job was placed
	CPUUS            int64 `json:"cpu_us"`
	FrozenThroughout bool  `json:"frozen_throughout"`
}

var (
	// ErrTooLong: a message exceeded MaxMessage.
	ErrTooLong = errors.New("proto: message too long")
	// ErrMalformed: a message is not valid JSON or misses required fields.
	ErrMalformed = errors.New("proto: malformed message")
)

// Reader reads messages from a stream.
type Reader struct {
	src io.Reader
	br  *bufio.Reader // nil while idle (see Idle)
}

// readerBuffer is a Reader's buffer: small, since a daemon keeps one per
// client and most messages are short; longer ones are read in pieces.
const readerBuffer = 512

// Buffered is how many bytes were read from the stream but not yet
// returned as messages.
func (r *Reader) Buffered() int {
	if r.br == nil {
		return 0
	}
	return r.br.Buffered()
}

// Idle lets go of the buffer if it holds nothing (a connection that will
// not be read for a while); the next Read makes another.
func (r *Reader) Idle() {
	if r.Buffered() == 0 {
		r.br = nil
	}
}

// NewReader returns a Reader on r.
func NewReader(r io.Reader) *Reader {
	return &Reader{src: r, br: bufio.NewReaderSize(r, readerBuffer)}
}

// Read returns the next message. It fails with ErrTooLong when a line
// exceeds MaxMessage (the stream is then unusable), ErrMalformed for a bad
// message, and io.EOF at a clean end of stream.
func (r *Reader) Read() (Msg, error) {
	if r.br == nil {
		r.br = bufio.NewReaderSize(r.src, readerBuffer)
	}
	var line []byte
	for {
		chunk, err := r.br.ReadSlice('\n')
		if len(line)+len(chunk) > MaxMessage {
			return Msg{}, ErrTooLong
		}
		line = append(line, chunk...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) && len(line) > 0 {
			return Msg{}, fmt.Errorf("%w: truncated message", ErrMalformed)
		}
		return Msg{}, err
	}
	return Decode(line)
}

// Decode parses one message (with or without its newline) and checks it with
// Validate.
func Decode(b []byte) (Msg, error) {
	var m Msg
	if len(b) > MaxMessage {
		return m, ErrTooLong
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&m); err != nil {
		return Msg{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return Msg{}, fmt.Errorf("%w: more than one JSON value on a line", ErrMalformed)
	}
	if err := m.Validate(); err != nil {
		return Msg{}, err
	}
	return m, nil
}

// Encode returns m as one line, newline included, or ErrTooLong.
func Encode(m Msg) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("proto: encode %s: %w", m.Type, err)
	}
	if len(b)+1 > MaxMessage {
		return nil, fmt.Errorf("%w: %s message of %d bytes", ErrTooLong, m.Type, len(b)+1)
	}
	return append(b, '\n'), nil
}

// Write encodes m and writes it to w in one call.
func Write(w io.Writer, m Msg) error {
	b, err := Encode(m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// Validate checks the fields a message of its type needs. Types it does not
// know are malformed: a peer of a later version must negotiate with hello.
func (m *Msg) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrMalformed, m.Type, fmt.Sprintf(format, a...))
	}
	switch m.Type {
	case THello:
		if m.Version <= 0 {
			return bad("no version")
		}
	case TAcquire:
		if m.Mode == "" {
			return bad("no mode")
		}
		if len(m.Command) == 0 || len(m.Command) > MaxArgs {
			return bad("command must have 1 to %d words", MaxArgs)
		}
		for _, a := range m.Command {
			if len(a) > MaxArgBytes {
				return bad("command word longer than %d bytes", MaxArgBytes)
			}
		}
		if len(m.Resources) > MaxResources {
			return bad("more than %d resources", MaxResources)
		}
		for _, r := range m.Resources {
			if err := ValidName(r); err != nil {
				return bad("%v", err)
			}
		}
		if m.TimeoutMS < 0 || m.MaxRuntimeMS < 0 || m.IfElapsedMS < 0 || m.ExpireAfterMS < 0 {
			return bad("negative duration")
		}
		if m.Key != "" {
			if err := ValidName(m.Key); err != nil {
				return bad("key: %v", err)
			}
		} else if m.IfElapsedMS > 0 || m.Replace || m.ExpireAfterMS > 0 {
			return bad("if_elapsed_ms, replace and expire_after_ms need a key")
		}
		if m.Within != "" {
			if err := ValidName(m.Within); err != nil {
				return bad("within: %v", err)
			}
		}
		if !validGovernor(m.Governor) {
			return bad("governor: at most %d of [a-z0-9%%]", MaxGovernorBytes)
		}
		if err := validBind(m); err != nil {
			return bad("%v", err)
		}
	case TPlace:
		if m.PID <= 0 {
			return bad("no pid")
		}
	case TCancel:
		if m.Ticket == 0 && m.Job == "" {
			return bad("no ticket or job")
		}
	case TReport:
		if m.Figures == nil {
			return bad("no figures")
		}
	case TDone, TList, TWatch, TQueued, TWaiting, TGranted, TPlaced, TBusy, TExpired, TSkipped, TFrozen, TThawed, TCancelled:
	case TError:
		if m.Code == "" {
			return bad("no code")
		}
	case "":
		return fmt.Errorf("%w: no type", ErrMalformed)
	default:
		return bad("unknown message type")
	}
	return nil
}

// validGovernor bounds a governor's length and characters; the daemon
// parses what passes.
func validGovernor(s string) bool {
	if len(s) > MaxGovernorBytes {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '%') {
			return false
		}
	}
	return true
}

// ValidName checks a resource name: 1 to MaxNameBytes of [A-Za-z0-9._-].
func ValidName(s string) error {
	if s == "" || len(s) > MaxNameBytes {
		return fmt.Errorf("resource name must be 1 to %d characters", MaxNameBytes)
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("resource name %q: only letters, digits, '.', '_' and '-'", s)
		}
	}
	return nil
}

// MaxBindBytes bounds a bind path.
const MaxBindBytes = 1024

// validBind checks an acquire's bind, bind_grace_ms and owner: a clean
// absolute cgroup path of printable ASCII, no grace or owner without it, an
// owner name like a user's, and nothing that needs a client process (a run
// report, place_self).
func validBind(m *Msg) error {
	if m.Bind == "" {
		if m.BindGraceMS != 0 || m.Owner != "" {
			return errors.New("bind_grace_ms and owner need bind")
		}
		return nil
	}
	if err := ValidBindPath(m.Bind); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if m.BindGraceMS < 0 {
		return errors.New("negative duration")
	}
	if m.Owner != "" && ValidUserName(m.Owner) != nil {
		return errors.New("owner: 1 to 64 of [A-Za-z0-9._-], not starting with '-'")
	}
	if m.Report || m.PlaceSelf {
		return errors.New("bind: no report or place_self: the lease has no client process")
	}
	return nil
}

// ValidBindPath checks a cgroup path a lease may be bound to: clean,
// absolute, below the root, printable ASCII without spaces, at most
// MaxBindBytes.
func ValidBindPath(p string) error {
	if len(p) > MaxBindBytes || !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
		return fmt.Errorf("a clean absolute cgroup path below the root, at most %d bytes", MaxBindBytes)
	}
	for _, r := range p {
		if r < 0x21 || r > 0x7e {
			return errors.New("printable ASCII without spaces only")
		}
	}
	return nil
}

// ValidUserName checks a user name as a listing shows it: 1 to 64 of
// [A-Za-z0-9._-], not starting with '-'.
func ValidUserName(s string) error {
	if len(s) > 64 || strings.HasPrefix(s, "-") || ValidName(s) != nil {
		return errors.New("bad user name")
	}
	return nil
}
