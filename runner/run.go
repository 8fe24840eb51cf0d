package runner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/internal/cmdline"
	"github.com/perflock/perflock/proto"
)

// Options configure one job run by [Run].
type Options struct {
	// Program names the command in messages ("perfrun: …") and in the hello.
	Program string
	// Socket is the --socket option: "" to discover (see [Discover]).
	Socket string
	// Mode is the protocol mode: "exclusive", "shared" or "group(ID)".
	Mode string
	// Resources to hold; nil for the whole machine.
	Resources []string
	// Preemptible marks a shared job that the daemon may freeze (pls).
	Preemptible bool
	// Nonblock fails at once, with ConflictExit, rather than wait.
	Nonblock bool
	// Timeout gives up waiting after this long, with ConflictExit; 0 waits
	// for ever.
	Timeout time.Duration
	// MaxRuntime, when positive, has the daemon stop the job (SIGTERM,
	// then SIGKILL) once it has run that long.
	MaxRuntime time.Duration
	// Key names the job across runs (--key): the daemon remembers when it
	// last completed successfully and finds other jobs of the same key.
	// [Run] uses [CommandKey] of argv when it is empty and IfElapsed,
	// Replace or ExpireAfter is set.
	Key string
	// IfElapsed, when positive, skips the job (exit 0) if Key last
	// completed successfully less than this long ago.
	IfElapsed time.Duration
	// Replace cancels or stops older jobs of the same Key first.
	Replace bool
	// ExpireAfter, when positive, stops a job of the same Key that has
	// held longer than this.
	ExpireAfter time.Duration
	// Governor pins the CPU frequency while the job runs (--governor):
	// "performance" or a percentage such as "70%"; "" leaves it alone. The
	// commands check it with governor.ParseMode.
	Governor string
	// ConflictExit is the exit status when the lock is not obtained (busy
	// or timed out). The commands default it to ExitConflict; note that the
	// zero value means 0.
	ConflictExit int
	// Quiet silences the waiting status and the busy and timeout messages.
	Quiet bool
	// Verbose adds notices: granted after how long, where the job was
	// placed, frozen and thawed, its exit status.
	Verbose bool
	// Close keeps the lease descriptor from the job (-o): the lease then
	// does not outlive this process unless the daemon's cgroup holds it.
	Close bool
	// InPlace lets Run exec the job in this very process once the daemon
	// has placed it, where nothing needs a parent after (not with Close,
	// Report, Key or Verbose): Run then returns only if the job could not
	// start. Without it, or with one of those, the job is a held child and
	// Run returns its exit status.
	InPlace bool
	// Bind (root, or a user perflockd --bind-users names) binds the lease
	// to the processes of the cgroup at this cgroup2 path, which a cluster
	// scheduler made: the command is not run (its words are what listings
	// show), Run waits its turn, prints the job's name on Stdout once the
	// lease is bound, and returns 0. The lease outlives this process: it
	// ends once the cgroup, having had a process, has none left (or none
	// came within BindGrace), or when the job is cancelled.
	Bind      string
	BindGrace time.Duration
	// Owner (with Bind) is the user listings show for the job.
	Owner string
	// Report asks the daemon for a run report of an exclusive or group
	// job: ReportText or ReportJSON; "" for none. It is written after the
	// job exits, to Stderr or ReportFile.
	Report string
	// ReportFile, when set, receives the report instead of Stderr.
	ReportFile string
	// NoASLR runs the job with address-space randomization off: the held
	// child sets ADDR_NO_RANDOMIZE in its persona (personality(2)) just
	// before it execs the job, so the job and its children get the same
	// addresses every run; nothing else changes (not this process, not the
	// machine's randomize_va_space). Run checks first that the kernel
	// allows it, and fails before waiting in line if not.
	NoASLR bool
	// Stdin, Stdout and Stderr are the job's standard files; nil for this
	// process's own. Messages go to Stderr.
	Stdin, Stdout, Stderr *os.File
}

// EnvJob names, in a job's environment, the job it runs as ("x-42"): a
// perfrun or pls started inside sends it back, and perflockd refuses a
// request that would wait for the job it comes from.
const EnvJob = "PERFLOCK_JOB"

// localTimeoutGrace is how long after Options.Timeout the client gives up by
// itself if the daemon has not said "expired".
const localTimeoutGrace = time.Second

// Run runs argv as a job and returns the exit status for the command (see
// the package documentation): it resolves argv[0] like a shell (so a typo
// fails at once, 127, rather than after waiting), connects to the daemon
// (starting one if needed), waits its turn showing a status line, starts
// the job held, has the daemon place it, lets it exec, forwards signals to
// it while it runs and returns its status. Cancelling ctx acts like SIGTERM.
func Run(ctx context.Context, o Options, argv []string) int {
	if o.Stdin == nil {
		o.Stdin = os.Stdin
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.Program == "" {
		o.Program = "perfrun"
	}
	if o.Key == "" && (o.IfElapsed > 0 || o.Replace || o.ExpireAfter > 0) {
		o.Key = CommandKey(argv)
	}
	j := &job{o: o, argv: argv, tty: isTerminal(o.Stderr), start: time.Now()}
	return j.run(ctx)
}

// CommandKey is the default --key of a command line: the first 16 hex
// digits of the SHA-256 of its words joined by NUL.
func CommandKey(argv []string) string {
	sum := sha256.Sum256([]byte(strings.Join(argv, "\x00")))
	return hex.EncodeToString(sum[:8])
}

// job is the state of one Run.
type job struct {
	o    Options
	argv []string
	tty  bool // stderr is a terminal: draw a live status line
	line bool // a status line is on screen
	c    *conn
	sigs chan os.Signal
	sock Socket
	// start is when Run began: Options.Timeout counts from it, the wait to
	// connect included.
	start time.Time
	// ticket and token let the request rejoin its place in line if the
	// daemon restarts while it waits.
	ticket uint64
	token  string
	name   string    // the job's name, once granted
	req    proto.Msg // the request, once made (request)
}

// rejoinFor is how long a waiting client tries to reach a restarted daemon.
var rejoinFor = 30 * time.Second

func (j *job) say(format string, a ...any) {
	j.clearLine()
	fmt.Fprintf(j.o.Stderr, "%s: %s\n", j.o.Program, fmt.Sprintf(format, a...))
}

func (j *job) verbose(format string, a ...any) {
	if j.o.Verbose {
		j.say(format, a...)
	}
}

func (j *job) run(ctx context.Context) int {
	if len(j.argv) == 0 {
		j.say("no command given")
		return ExitUsage
	}
	var path string // the command to exec; none for a bound lease
	if j.o.Bind == "" {
		p, code, err := resolveCommand(j.argv[0])
		if err != nil {
			j.say("%v", err)
			return code
		}
		path = p
	}
	if j.o.NoASLR {
		if err := CheckNoASLR(); err != nil {
			j.say("--no-aslr: %s", trimPrefix(err))
			return ExitUnavailable
		}
	}
	// The held child is this very binary, by /proc/self/exe: it works even
	// if the path was replaced (an upgrade) or is not searchable by us.
	const self = "/proc/self/exe"
	sock, err := Discover(j.o.Socket)
	if err != nil {
		j.say("%v", err)
		return ExitUnavailable
	}

	j.sigs = make(chan os.Signal, 8)
	notifySignals(j.sigs)
	defer signal.Stop(j.sigs)

	j.sock = sock
	if code, ok := j.connect(ctx, sock); !ok {
		return code
	}
	defer func() { j.c.close() }() // j.c changes when the request rejoins
	if j.o.Bind != "" && !j.c.hello.BindLeases {
		j.say("this perflockd cannot bind a lease to a cgroup (--bind-cgroup): upgrade it")
		return ExitUnavailable
	}
	if code, ok := j.wait(ctx); !ok {
		return code
	}
	if j.o.Bind != "" {
		return j.runBound(ctx)
	}
	if j.inPlace() {
		return j.runInPlace(ctx, path)
	}
	return j.runHeld(ctx, self, path)
}

// dialOpts are the job's: its program, Options.Timeout bounding the wait
// for an overloaded daemon, and a notice when that wait is long.
func (j *job) dialOpts() dialOpts {
	o := dialOpts{client: j.o.Program, busyFor: j.o.Timeout}
	if !j.o.Quiet {
		o.waiting = func(msg string) { j.say("%s", msg) }
	}
	return o
}

// remaining is what is left of Options.Timeout, at least a millisecond; 0
// without a timeout.
func (j *job) remaining() time.Duration {
	if j.o.Timeout <= 0 {
		return 0
	}
	return max(j.o.Timeout-time.Since(j.start), time.Millisecond)
}

// connect dials the daemon; a signal meanwhile cancels.
func (j *job) connect(ctx context.Context, sock Socket) (int, bool) {
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		c   *conn
		err error
	}
	done := make(chan result, 1)
	o := j.dialOpts()
	o.first = j.request
	go func() {
		c, err := dial(dctx, sock, o)
		done <- result{c, err}
	}()
	var r result
	select {
	case r = <-done:
	case sig := <-j.sigs:
		cancel()
		if r = <-done; r.c != nil {
			r.c.close()
		}
		return j.cancelled(sig), false
	}
	if r.err != nil && errors.Is(r.err, ErrOverloaded) && j.o.Timeout > 0 && time.Since(j.start) >= j.o.Timeout {
		if !j.o.Quiet {
			j.say("timed out after %s waiting to connect to perflockd at %s: it is overloaded (its queue of new connections stayed full)",
				friendlyDuration(j.o.Timeout), sock.Path)
		}
		return j.o.ConflictExit, false
	}
	if r.err != nil {
		j.say("%v", trimPrefix(r.err))
		return ExitUnavailable, false
	}
	j.c = r.c
	return 0, true
}

// trimPrefix drops this package's sentinel prefixes from an error for
// users.
func trimPrefix(err error) string {
	return strings.ReplaceAll(err.Error(), "runner: ", "")
}

func (j *job) cancelled(sig os.Signal) int {
	if !j.o.Quiet {
		j.say("cancelled")
	}
	if s, ok := sig.(syscall.Signal); ok {
		return ExitSignal(s)
	}
	return ExitSignal(syscall.SIGTERM)
}

// request is the job's acquire message; its timeout is what is left of
// Options.Timeout when it is made. It goes out with the hello.
func (j *job) request() proto.Msg {
	j.req = proto.Msg{
		Type:          proto.TAcquire,
		Mode:          j.o.Mode,
		Resources:     j.o.Resources,
		Preemptible:   j.o.Preemptible,
		Nonblock:      j.o.Nonblock,
		TimeoutMS:     timeoutMS(j.remaining()),
		MaxRuntimeMS:  timeoutMS(j.o.MaxRuntime),
		Command:       listingCommand(j.argv),
		Key:           j.o.Key,
		IfElapsedMS:   timeoutMS(j.o.IfElapsed),
		Replace:       j.o.Replace,
		ExpireAfterMS: timeoutMS(j.o.ExpireAfter),
		Report:        j.o.Report != "",
		Governor:      j.o.Governor,
		Within:        os.Getenv(EnvJob),
		PlaceSelf:     j.mayRunInPlace(),
		Bind:          j.o.Bind,
		BindGraceMS:   timeoutMS(j.o.BindGrace),
		Owner:         j.o.Owner,
	}
	return j.req
}

// wait waits until the request, sent with the hello, is granted.
func (j *job) wait(ctx context.Context) (int, bool) {
	req := j.req
	start := time.Now()
	what := resourcesName(j.o.Resources)
	var timeout <-chan time.Time
	if j.o.Timeout > 0 {
		t := time.NewTimer(j.remaining() + localTimeoutGrace)
		defer t.Stop()
		timeout = t.C
	}
	var tick <-chan time.Time
	var st WaitState
	for {
		select {
		case <-ctx.Done():
			j.c.close()
			return j.cancelled(syscall.SIGTERM), false
		case sig := <-j.sigs:
			j.c.close()
			return j.cancelled(sig), false
		case <-timeout:
			j.c.close()
			return j.timedOut(what), false
		case <-tick:
			j.drawStatus(what, st)
		case r := <-j.c.msgs:
			if r.err != nil {
				if j.ticket == 0 || !j.rejoin(ctx, req) {
					j.say("lost the connection to perflockd while waiting: %v", connErr(r.err))
					return ExitUnavailable, false
				}
				continue
			}
			m := r.msg
			switch m.Type {
			case proto.TCancelled:
				j.say("%s", printable(m.Message))
				return j.o.ConflictExit, false
			case proto.TQueued, proto.TWaiting:
				if m.Type == proto.TQueued {
					j.ticket, j.token = m.Ticket, m.Token
				}
				first := st.Reported.IsZero()
				st = WaitState{Position: m.Position, Holders: m.Holders, Reported: time.Now()}
				if j.o.Quiet {
					continue
				}
				if j.tty {
					if tick == nil {
						t := time.NewTicker(time.Second)
						defer t.Stop()
						tick = t.C
					}
					j.drawStatus(what, st)
				} else if first {
					fmt.Fprintln(j.o.Stderr, StatusLine(j.o.Program, what, st, time.Now()))
				}
			case proto.TGranted:
				j.name = m.Job
				j.clearLine()
				j.verbose("granted %s after %s", m.Job, HumanDuration(time.Since(start)))
				return 0, true
			case proto.TBusy:
				if !j.o.Quiet {
					msg := what + " is busy"
					if h := describeHolders(m.Holders, 0, 3); h != "" {
						msg += ": held by " + h
					}
					j.say("%s", msg)
				}
				return j.o.ConflictExit, false
			case proto.TExpired:
				return j.timedOut(what), false
			case proto.TSkipped:
				if !j.o.Quiet {
					j.say("skipped: %s", printable(m.Message))
				}
				return 0, false
			case proto.TError:
				return j.daemonError(m), false
			default:
				j.say("unexpected %q message from perflockd while waiting", m.Type)
				return ExitUnavailable, false
			}
		}
	}
}

func (j *job) timedOut(what string) int {
	if !j.o.Quiet {
		j.say("timed out after %s waiting for %s", friendlyDuration(j.o.Timeout), what)
	}
	return j.o.ConflictExit
}

func (j *job) daemonError(m proto.Msg) int {
	if m.Code == proto.CodeInvalid {
		j.say("perflockd rejected the request: %s", printable(m.Message))
		return ExitUsage
	}
	if m.Code == proto.CodeUnavailable {
		j.say("%s", printable(m.Message)) // it says what cannot be done, and why
		return ExitUnavailable
	}
	j.say("perflockd: %s: %s", m.Code, printable(m.Message))
	return ExitUnavailable
}

func connErr(err error) string {
	if errors.Is(err, io.EOF) {
		return "it closed the connection"
	}
	return err.Error()
}

// drawStatus redraws the status line on a terminal.
func (j *job) drawStatus(what string, st WaitState) {
	if !j.tty || j.o.Quiet {
		return
	}
	line := StatusLine(j.o.Program, what, st, time.Now())
	if w := TerminalWidth(j.o.Stderr); w > 1 {
		line = cmdline.Truncate(line, w-1)
	}
	fmt.Fprint(j.o.Stderr, "\r\033[K"+line)
	j.line = true
}

func (j *job) clearLine() {
	if j.line {
		fmt.Fprint(j.o.Stderr, "\r\033[K")
		j.line = false
	}
}

// awaitPlaced waits for the daemon to place the job's process. On failure
// or a signal it calls abort (which makes a held child exit without running
// the job).
func (j *job) awaitPlaced(ctx context.Context, abort func()) (int, bool) {
	for {
		select {
		case <-ctx.Done():
			abort()
			return j.cancelled(syscall.SIGTERM), false
		case sig := <-j.sigs:
			abort()
			return j.cancelled(sig), false
		case r := <-j.c.msgs:
			if r.err != nil {
				abort()
				j.say("lost the connection to perflockd before the job started: %v", connErr(r.err))
				return ExitUnavailable, false
			}
			switch r.msg.Type {
			case proto.TPlaced:
				if r.msg.Where != "" {
					j.verbose("placed in %s", printable(r.msg.Where))
				} else {
					j.verbose("placed (driver %s: no cgroup)", printable(j.c.hello.Driver))
				}
				if j.o.Governor != "" {
					j.verbose("CPU frequency pinned (--governor %s)", j.o.Governor)
				}
				return 0, true
			case proto.TError:
				abort()
				return j.daemonError(r.msg), false
			default:
				if j.notice(r.msg) {
					continue
				}
				abort()
				j.say("unexpected %q message from perflockd while placing the job", r.msg.Type)
				return ExitUnavailable, false
			}
		}
	}
}

// notice tells of a message that may come while the job is placed or runs
// (frozen, thawed, cancelled), and reports whether m was one.
func (j *job) notice(m proto.Msg) bool {
	switch m.Type {
	case proto.TFrozen:
		j.verbose("frozen: an exclusive job runs")
	case proto.TThawed:
		j.verbose("thawed")
	case proto.TCancelled:
		j.say("%s: stopping the job", printable(m.Message))
	default:
		return false
	}
	return true
}

// forwardedSignals reach the job while it runs; while waiting they cancel.
var forwardedSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT}

// notifySignals catches forwardedSignals, except those this process was
// started with ignored (nohup, background jobs): they stay ignored, for us
// and for the job.
func notifySignals(c chan<- os.Signal) {
	for _, s := range forwardedSignals {
		if !signal.Ignored(s) {
			signal.Notify(c, s)
		}
	}
}

// shouldForward says whether sig, received while the job runs, must be sent
// to it. The job shares our process group, so when that group is the
// terminal's foreground group the terminal has already delivered SIGINT and
// SIGQUIT to the job; forwarding them would deliver them twice.
func shouldForward(sig os.Signal, stdin *os.File) bool {
	if sig != syscall.SIGINT && sig != syscall.SIGQUIT {
		return true
	}
	pgrp, err := unix.IoctlGetInt(int(stdin.Fd()), unix.TIOCGPGRP)
	return err != nil || pgrp != unix.Getpgrp()
}

// resolveCommand finds name like a shell would: its path, or the exit
// status and an error for a command that is missing (127) or not
// executable (126).
func resolveCommand(name string) (string, int, error) {
	path, err := exec.LookPath(name)
	if err == nil {
		return path, 0, nil
	}
	name = printable(name)
	switch {
	case errors.Is(err, exec.ErrDot):
		return "", ExitNotFound, fmt.Errorf("%s: found only in the current directory through a relative PATH entry; run it as ./%s", name, name)
	case errors.Is(err, exec.ErrNotFound):
		return "", ExitNotFound, fmt.Errorf("%s: command not found", name)
	case errors.Is(err, fs.ErrNotExist):
		return "", ExitNotFound, fmt.Errorf("%s: no such file or directory", name)
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return "", ExitCannotExec, fmt.Errorf("%s: %v", name, errno)
	}
	if errors.Is(err, fs.ErrPermission) {
		return "", ExitCannotExec, fmt.Errorf("%s: permission denied", name)
	}
	return "", ExitCannotExec, fmt.Errorf("%s: %v", name, err)
}

// listingCommand is argv trimmed to the protocol's limits for listings:
// words cut to MaxArgBytes, at most MaxArgs words, and the whole small
// enough to fit in one message.
func listingCommand(argv []string) []string {
	for budget := 32 << 10; ; budget /= 2 {
		out := make([]string, 0, min(len(argv), proto.MaxArgs))
		left := budget
		for i, a := range argv {
			if i == proto.MaxArgs-1 && len(argv) > proto.MaxArgs {
				out = append(out, "…")
				break
			}
			a = cutUTF8(a, min(proto.MaxArgBytes, left))
			if a == "" && i > 0 {
				out = append(out, "…")
				break
			}
			out = append(out, a)
			left -= len(a)
		}
		if out[0] == "" {
			out[0] = "?"
		}
		m := proto.Msg{Type: proto.TAcquire, Mode: "exclusive", Command: out}
		if _, err := proto.Encode(m); err == nil || budget < 64 {
			return out
		}
	}
}

// cutUTF8 cuts s to at most n bytes without splitting a character.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n <= 0 {
		return ""
	}
	s = s[:n]
	for i := len(s) - 1; i >= 0 && i >= len(s)-4; i-- {
		if s[i] < 0x80 || s[i] >= 0xC0 {
			// s[i] starts a character: keep it only if it is complete.
			if !utf8.FullRuneInString(s[i:]) {
				return s[:i]
			}
			break
		}
	}
	return s
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// TerminalWidth is the width in columns of the terminal f is, 0 when f is
// not a terminal.
func TerminalWidth(f *os.File) int {
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	return int(ws.Col)
}

// rejoin reconnects to a restarted daemon (starting a per-user one if need
// be) and asks for the request's old place in line. It reports whether the
// request waits again.
func (j *job) rejoin(ctx context.Context, req proto.Msg) bool {
	j.c.close()
	j.verbose("lost perflockd while waiting; rejoining with ticket %d", j.ticket)
	deadline := time.Now().Add(rejoinFor)
	req.Ticket, req.Token = j.ticket, j.token
	// A restarted daemon (systemd's Restart=) takes a moment: try after half
	// a second, then every quarter.
	wait := 500 * time.Millisecond
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = 250 * time.Millisecond
		dctx, cancel := context.WithDeadline(ctx, deadline)
		c, err := dial(dctx, j.sock, j.dialOpts())
		cancel()
		if err != nil {
			continue
		}
		if err := c.send(req); err != nil {
			c.close()
			continue
		}
		j.c = c
		return true
	}
	return false
}
