package cli

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/perflock/perflock/governor"
	"github.com/perflock/perflock/lockq"
	"github.com/perflock/perflock/proto"
	"github.com/perflock/perflock/runner"
)

// NewPerfrun is perfrun: run a command alone on the machine.
func NewPerfrun() *cobra.Command {
	return newJobCommand("perfrun", runner.Options{Mode: "exclusive", InPlace: true}, `perfrun runs CMD alone on the machine. It waits its turn in a fair first-come,
first-served queue kept by perflockd, then runs CMD with every core to itself and
exits with CMD's status. Background jobs started with pls are frozen while CMD runs
(or, under the daemon's drain policy, finish first and wait behind it).

The queue is fair: a request waits only behind earlier requests it conflicts with,
and later ones wait behind it, so a stream of shared jobs cannot starve it. The
lease lasts until perfrun is gone AND every process of CMD has exited: killing
perfrun does not hand the machine to the next job while CMD still runs.

CMD is a child of perfrun with the same terminal, environment, working directory
and process group; it is placed in the job's cgroup before it starts. Nobody has
to start a daemon: without a system daemon, perfrun starts a per-user one.`,
		`  # run a benchmark alone, after waiting its turn
  perfrun -- make bench

  # from cron: if the machine is busy, skip this run and exit 0 (add -q for no message)
  perfrun -n -E 0 -- ./nightly.sh

  # give up (exit 75) after waiting ten minutes (-w 600 is the same, as in flock(1))
  perfrun -t 10m -- ./bench

  # hold a named lock, not the machine: backups one at a time, benchmarks unaffected
  perfrun -L backup -- ./backup.sh

  # the machine and the network at once
  perfrun -L cpu -L net -- ./netbench

  # a group: the two ranks run together, any other job waits for both
  perfrun --group 7 -- ./rank0 & perfrun --group 7 -- ./rank1

  # cron: run at most once an hour (exit 0, "skipped", if the last success is younger)
  perfrun --key nightly --if-elapsed 1h -- ./nightly.sh

  # the newest sync wins: an older one waiting or running is cancelled or stopped
  perfrun --key sync --replace -- ./sync.sh

  # stop a sync stuck for more than 2 hours, then run this one
  perfrun --key sync --expire-after 2h -- ./sync.sh

  # how clean was the run: the job's CPU, CPU used outside it, pressure, frozen pls jobs
  perfrun --report -- ./bench
  perfrun --report=json -- ./bench
  perfrun --report-file run.json -- ./bench
  # the CPU frequency fixed at 70% of the highest while the benchmark runs
  perfrun --governor 70% -- ./bench

  # the same addresses every run: address-space randomization off for this job only
  perfrun --no-aslr -- ./bench

  # who holds the machine, who waits
  wholock`)
}

// NewPls is pls: run background work that shares the machine and steps
// aside for exclusive jobs.
func NewPls() *cobra.Command {
	return newJobCommand("pls", runner.Options{Mode: "shared", Preemptible: true, InPlace: true}, `pls ("please") runs CMD as background work: any number of pls jobs run side by
side, but they step aside for exclusive jobs (perfrun). While an exclusive job runs,
pls jobs are frozen (the daemon's freeze policy, the default) and thawed after it;
under the drain policy no new pls job starts while an exclusive job waits, and the
exclusive job starts when the running ones have finished.

The queue is fair: a request waits only behind earlier requests it conflicts with.
The lease lasts until pls is gone AND every process of CMD has exited. CMD is a
child of pls with the same terminal, environment, working directory and process
group; it is placed in the job's cgroup before it starts. Nobody has to start a
daemon: without a system daemon, pls starts a per-user one.`,
		`  # a parallel build that yields to benchmarks
  pls -- make -j8

  # only if nothing exclusive holds or waits right now
  pls -n -- ./crunch.sh

  # share the lock "scratch" with other pls jobs; never frozen (not the machine)
  pls -L scratch -- ./reader.sh`)
}

func newJobCommand(name string, o runner.Options, long, examples string) *cobra.Command {
	var timeout, maxRuntime, ifElapsed, expireAfter, bindGrace timeoutValue
	var resources []string
	var group uint32
	var gov string
	cmd := &cobra.Command{
		Use:     name + " [flags] [--] CMD [ARG...]",
		Short:   "run a command under perflock's fair machine lock",
		Long:    long,
		Example: examples,
		Annotations: map[string]string{
			"manual": jobManual(name),
		},
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := NoEmptyValue(cmd, "socket", "key"); err != nil {
				return err
			}
			if len(args) == 0 {
				return usageError{fmt.Errorf("no command given")}
			}
			if o.ConflictExit < 0 || o.ConflictExit > 255 {
				return usageError{fmt.Errorf("-E %d: an exit status is 0 to 255", o.ConflictExit)}
			}
			if o.Quiet && o.Verbose {
				return usageError{fmt.Errorf("-q and -v exclude each other")}
			}
			res, err := resourceList(resources)
			if err != nil {
				return usageError{err}
			}
			o.Resources = res
			if cmd.Flags().Changed("group") {
				if o.Mode == "shared" {
					return usageError{fmt.Errorf("--group: a group job excludes every other job; use perfrun --group")}
				}
				o.Mode = fmt.Sprintf("group(%d)", group)
			}
			if cmd.Flags().Changed("governor") && o.Mode == "shared" {
				return usageError{fmt.Errorf("--governor: pls jobs share the machine and never pin the CPU frequency; use perfrun --governor")}
			}
			mode, err := governor.ParseMode(gov)
			if err != nil || (gov == "" && cmd.Flags().Changed("governor")) {
				return usageError{fmt.Errorf("--governor %q: want performance, none, or a percentage from 1 to 100 such as 70 or 70%%", gov)}
			}
			if mode != governor.None && res != nil && !slices.Contains(res, lockq.Machine) {
				return usageError{fmt.Errorf("--governor pins the whole machine's CPU frequency: it needs the machine (add -L %s)", lockq.Machine)}
			}
			if mode != governor.None {
				o.Governor = mode.String()
			}
			if o.Key != "" {
				if err := proto.ValidName(o.Key); err != nil {
					return usageError{fmt.Errorf("--key: %s", strings.Replace(err.Error(), "resource name", "a key", 1))}
				}
			}
			if err := reportFlags(cmd, &o, args); err != nil {
				return usageError{err}
			}
			if err := bindFlags(cmd, &o); err != nil {
				return usageError{err}
			}
			o.BindGrace = time.Duration(bindGrace)
			o.IfElapsed = time.Duration(ifElapsed)
			o.ExpireAfter = time.Duration(expireAfter)
			o.Program = name
			o.Timeout = time.Duration(timeout)
			o.MaxRuntime = time.Duration(maxRuntime)
			return exitCode(runner.Run(cmd.Context(), o, args))
		},
	}
	cmd.SetHelpTemplate(helpTemplate)
	f := cmd.Flags()
	f.SetInterspersed(false)
	f.SortFlags = false
	f.BoolVarP(&o.Nonblock, "nonblock", "n", false, "fail at once (exit 75, see -E) if the lock cannot be had now")
	f.VarP(&timeout, "timeout", "t", "give up waiting after `DURATION` (exit 75, see -E): 30s, 10m, 1h30m, or seconds such as 30 or 2.5")
	f.VarP(&timeout, "wait", "w", "the same as -t, as in flock(1): `SECONDS` or a duration; e.g. -w 30")
	f.StringArrayVarP(&resources, "resource", "L", nil, "hold the lock `NAME` (repeatable, all at once): cpu (the machine, the default without -L), net, or any name of yours; without cpu, CMD is a plain process, never confined or frozen; e.g. -L backup, -L cpu -L net")
	if o.Mode == "shared" {
		f.Uint32Var(&group, "group", 0, "not for pls: group jobs are perfrun's")
		f.MarkHidden("group")
	} else {
		f.Uint32Var(&group, "group", 0, "a group lock: jobs with the same `ID` run together, all others are excluded, and a new one joins a running group at once; e.g. --group 7")
	}
	if o.Mode == "shared" {
		f.StringVar(&gov, "governor", "", "not for pls: pinning the CPU frequency is perfrun's")
		f.MarkHidden("governor")
	} else {
		f.StringVar(&gov, "governor", "none", "pin the CPU frequency while CMD runs (see GOVERNOR); `MODE` is performance, a percentage of the highest frequency such as 70 or 70%, or none; e.g. --governor performance")
	}
	f.BoolVar(&o.NoASLR, "no-aslr", false, "run CMD and its children with address-space layout randomization off (see ASLR), as LLVM's and Google benchmark's benchmarking guides advise; nothing else changes")
	f.Var(&maxRuntime, "max-runtime", "stop CMD (SIGTERM, SIGKILL 10s later) once it has run `DURATION`; e.g. --max-runtime 2h")
	f.StringVar(&o.Key, "key", "", "name this job across runs as `NAME` for --if-elapsed, --replace, --expire-after (default: a hash of the command line)")
	f.Var(&ifElapsed, "if-elapsed", "skip CMD (exit 0) if its key last completed successfully less than `DURATION` ago; e.g. --if-elapsed 1h")
	f.BoolVar(&o.Replace, "replace", false, "the newest instance wins: cancel or stop older waiting or running jobs of the same key first; e.g. --key sync --replace")
	f.Var(&expireAfter, "expire-after", "stop a job of the same key that has held longer than `DURATION`, then run; e.g. --expire-after 2h")
	f.IntVarP(&o.ConflictExit, "conflict-exit-code", "E", runner.ExitConflict, "exit with `N` when the lock is not obtained (-n or -t)")
	f.BoolVarP(&o.Quiet, "quiet", "q", false, "no waiting status, no busy or timeout message")
	f.BoolVarP(&o.Verbose, "verbose", "v", false, "say when granted, where the job runs, when frozen or thawed, and its exit status")
	if o.Mode == "shared" {
		f.StringVar(&o.Report, "report", "", "not for pls: run reports are perfrun's")
		f.StringVar(&o.ReportFile, "report-file", "", "not for pls: run reports are perfrun's")
		f.MarkHidden("report")
		f.MarkHidden("report-file")
	} else {
		f.StringVar(&o.Report, "report", "", "after CMD exits, report on stderr how clean the run was (see RUN REPORT), as `FORMAT` text (a bare --report) or json: --report=json, with '='")
		f.StringVar(&o.ReportFile, "report-file", "", "write the run report to `PATH` instead of stderr: JSON unless --report=text; e.g. --report-file run.json")
	}
	f.Lookup("report").NoOptDefVal = runner.ReportText
	f.StringVar(&o.Socket, "socket", "", "talk to the perflockd at `PATH` (default: see ENVIRONMENT)")
	if o.Mode != "shared" {
		f.StringVar(&o.Bind, "bind-cgroup", "", "for a cluster scheduler's Prolog (root, or perflockd --bind-users): hold the lock for the processes of the cgroup2 `PATH` (e.g. /system.slice/slurmstepd.scope/job_42) instead of running CMD, whose words only name the job in listings; prints the job's name once bound and exits 0; the lease ends once that cgroup has had a process and has none left (see CLUSTER SCHEDULERS)")
		f.Var(&bindGrace, "bind-grace", "with --bind-cgroup: end the lease if the cgroup has had no process `DURATION` after the grant (default 1m)")
		f.StringVar(&o.Owner, "owner", "", "with --bind-cgroup: the `USER` listings show for the job (the scheduler job's)")
	}
	f.BoolVarP(&o.Close, "close", "o", false, "do not hand the lease descriptor to CMD (see LEASE)")
	return cmd
}

// reportFlags checks --report and --report-file and sets o.Report: a
// --report-file alone means JSON.
func reportFlags(cmd *cobra.Command, o *runner.Options, args []string) error {
	f := cmd.Flags()
	if !f.Changed("report") && !f.Changed("report-file") {
		return nil
	}
	if o.Mode == "shared" {
		return fmt.Errorf("--report: run reports are for exclusive and group jobs; use perfrun --report")
	}
	if !f.Changed("report") {
		o.Report = runner.ReportJSON
	}
	if o.Report != runner.ReportText && o.Report != runner.ReportJSON {
		return fmt.Errorf("--report=%s: the format is text or json", o.Report)
	}
	if f.Changed("report-file") && o.ReportFile == "" {
		return fmt.Errorf("--report-file: give a file name")
	}
	// A bare --report takes no separate value: "--report json -- CMD" would
	// run a command called json.
	if f.Lookup("report").Value.String() == runner.ReportText && f.Changed("report") && cmd.ArgsLenAtDash() != 0 &&
		len(args) > 0 && (args[0] == runner.ReportJSON || args[0] == runner.ReportText) {
		return fmt.Errorf("--report %s: write --report=%s, with '='", args[0], args[0])
	}
	return nil
}

// resourceList checks -L names and drops repeats; nil means the machine.
func resourceList(names []string) ([]string, error) {
	var out []string
	for _, n := range names {
		if err := proto.ValidName(n); err != nil {
			return nil, fmt.Errorf("-L: %w", err)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	if len(out) > proto.MaxResources {
		return nil, fmt.Errorf("-L: at most %d resources", proto.MaxResources)
	}
	return out, nil
}

func jobManual(name string) string {
	return fmt.Sprintf(`While waiting:
  On a terminal, a status line on stderr shows the position in line and who holds
  the machine, for how long; otherwise one line is printed when waiting starts.
  -q silences both. If perflockd is overloaded (its queue of new connections is
  full), %[1]s tries to connect again and again for up to 30 s, saying after a
  second that it waits; -t bounds that too, and counts it.

EXIT STATUS
  CMD's status  CMD ran and exited
  128+N         CMD died of signal N, or %[1]s was cancelled by signal N while
                waiting (130 for Ctrl-C)
  75            the lock was not obtained: busy with -n, or -t expired (-E changes it)
  64            bad usage (an empty value such as --socket "" included), or the
                daemon rejected the request as invalid
  69            no perflockd reachable or startable, or it is overloaded, failed
                or cannot do what was asked
  126           CMD was found but cannot be executed
  127           CMD was not found (checked before waiting in line)

PROCESSES
  When its turn comes, %[1]s has perflockd place its own process in the job's
  cgroup or scope, then execs CMD in place, as systemd-run --scope does: CMD keeps
  %[1]s's pid, terminal, signals and exit status, and nothing else stays behind.
  %[1]s stays as CMD's parent (CMD then runs as its child, placed before it execs)
  only where a feature needs one once CMD runs: --report (the report comes after
  CMD), --key, --if-elapsed, --replace and --expire-after (CMD's exit status goes
  to the history), -v (notices while CMD runs, and its exit status) and -o (the
  lease is then %[1]s's, not CMD's); also inside another job (PERFLOCK_JOB set),
  so that the outer job keeps its own process and lease, and with a perflockd
  too old to place a client itself.

SIGNALS
  While waiting, SIGINT (Ctrl-C), SIGTERM, SIGHUP and SIGQUIT cancel the request:
  %[1]s exits 128+N. Once CMD runs in place, signals reach it directly. Where %[1]s
  stays CMD's parent, it forwards SIGTERM, SIGHUP, SIGQUIT and SIGINT to it, except
  that when CMD runs in the terminal's foreground, SIGINT and SIGQUIT are not
  forwarded: CMD shares %[1]s's process group, so Ctrl-C and Ctrl-\ already reach
  it from the terminal, and forwarding them would deliver them twice. Signals
  ignored when %[1]s starts (nohup) stay ignored, for CMD too.

LEASE
  CMD inherits the connection to perflockd as file descriptor 5, the way flock(1)
  hands its lock to the command: with the none driver (no cgroups) the lease then
  lasts until the last copy is closed, even if %[1]s (as CMD's parent) is killed.
  -o keeps it from CMD. With cgroups, the lease lasts until the job's cgroup is
  empty as well: a process CMD started keeps it after CMD has exited.

ASLR
  --no-aslr turns address-space layout randomization off for CMD's own process
  tree: the process that execs CMD sets ADDR_NO_RANDOMIZE in its persona
  (personality(2), as setarch -R does) just before the exec, and CMD's children
  inherit it, so stack, heap and mmap addresses are the same every run and a
  benchmark's alignment-dependent timings stop moving between runs (the
  benchmarking guides of LLVM and Google benchmark ask for it). Nothing global
  changes: not /proc/sys/kernel/randomize_va_space, not %[1]s, not other jobs. The
  kernel drops the flag for set-user-ID and set-group-ID programs. Where
  personality(2) is refused (a container's seccomp filter may allow it only for
  a few values), %[1]s says so and exits 69 at once, before waiting in line.
%[2]s
ENVIRONMENT
  PERFLOCK_SOCKET  the daemon's socket, like --socket. Otherwise the system
                   daemon's /run/perflock/perflock.sock if it exists, else a per-user
                   daemon at $XDG_RUNTIME_DIR/perflock/perflock.sock (or
                   /tmp/perflock-$UID/perflock.sock) that %[1]s starts on demand and
                   that exits when idle; its log is perflockd.log beside the socket.
                   A daemon is started on that per-user socket only: where no daemon
                   listens at a socket named with --socket or PERFLOCK_SOCKET, %[1]s
                   says so and exits 69.
  PERFLOCK_JOB     set in CMD's environment to the job's name (e.g. x-42). A perfrun
                   or pls run inside a job sends it back: a request that would wait
                   for the job it runs in (perfrun inside pls or inside perfrun, on
                   the same lock) is refused with exit 69 instead of waiting for ever.`, name, governorManual(name)+runReportManual(name)+clusterManual(name))
}

// governorManual is perfrun's GOVERNOR section; pls has none. It and
// runReportManual stand between LEASE and ENVIRONMENT.
func governorManual(name string) string {
	if name != "perfrun" {
		return ""
	}
	return `
GOVERNOR
  --governor pins the frequency of every CPU through cpufreq while CMD runs, and
  puts the earlier settings back when the job's lease ends. performance selects
  the performance governor at the highest frequency; a percentage from 1 to 100
  (70 or 70%) fixes every CPU at that share of its highest frequency (the nearest
  one the driver offers); none, the default, leaves the frequency alone.
  Pinning needs a cpufreq driver (most virtual machines have none) and the
  system perflockd, which runs as root: without them perfrun fails at once,
  before waiting in line, with exit status 69. If the pin cannot be set when the
  job's turn comes, the job does not run (exit 69). Group jobs share one pin: the
  first to ask pins, the last to end restores; a member that asks for another
  mode while it is in force is refused (exit 69), one without --governor runs
  under it. The daemon saves the settings before it changes them, so a restarted
  perflockd keeps the pin for a job that still runs and restores them after.
`
}

// clusterManual is perfrun's CLUSTER SCHEDULERS section.
func clusterManual(name string) string {
	if name != "perfrun" {
		return ""
	}
	return `
CLUSTER SCHEDULERS
  A cluster scheduler's Prolog, as root, takes the machine for the scheduler's
  job with --bind-cgroup PATH, the job's cgroup as /proc/PID/cgroup shows it
  after "0::": perfrun waits its turn like any job (bound it with -t), then binds
  the lease to that cgroup, prints the job's name (x-42) and exits 0. Nothing is
  run: CMD's words only name the job in listings (e.g. slurm job 42), and
  --owner names its user there. The lease ends once the cgroup has had a
  process and has none left, or is removed, so a job whose Epilog never runs
  still lets go; also if no process came within --bind-grace (1m), or when the
  job is cancelled (wholock --cancel x-42: the processes are the scheduler's and
  are not signalled). Only root and the users perflockd --bind-users names may
  bind (otherwise exit 69). contrib/slurm has a Prolog and Epilog for Slurm.
`
}

// runReportManual is perfrun's RUN REPORT section.
func runReportManual(name string) string {
	if name != "perfrun" {
		return ""
	}
	return `
RUN REPORT
  --report asks perflockd to measure the run, from the job's placement to its exit,
  and prints after CMD exits (the exit status stays CMD's):
    job CPU          CMD's own user and system CPU time (its cgroup's cpu.stat)
    outside the job  CPU time the machine spent on anything else meanwhile: busy
                     time in /proc/stat minus CMD's, and its share of all CPUs ×
                     the wall time (to a tick per CPU, 10 ms)
    machine busy     all busy CPU time meanwhile
    CPU pressure     time in which CMD's runnable tasks waited for a CPU (PSI)
    throttling       periods and time a CPU quota held CMD back (with the cpu
                     controller only)
    shared jobs      pls jobs frozen at the start, the CPU time pls jobs used during
                     the run, and whether they stayed frozen: only if that is zero
  A figure that cannot be measured says why (no cgroup with the none driver or a
  job without the cpu resource; no PSI in the kernel). --report=json prints one
  JSON line, --report-file PATH writes the report to PATH instead of stderr (JSON
  unless --report=text). perfrun waits up to 5 s for the report after CMD exits.
`
}

// timeoutValue is a -t flag: a Go duration or a number of seconds.
type timeoutValue time.Duration

func (t *timeoutValue) String() string {
	if *t == 0 {
		return ""
	}
	return time.Duration(*t).String()
}

func (t *timeoutValue) Set(s string) error {
	d, err := runner.ParseTimeout(s)
	if err != nil {
		return err
	}
	*t = timeoutValue(d)
	return nil
}

func (t *timeoutValue) Type() string { return "duration" }

// bindFlags checks --bind-cgroup and the flags that go with it.
func bindFlags(cmd *cobra.Command, o *runner.Options) error {
	f := cmd.Flags()
	if o.Mode == "shared" || f.Lookup("bind-cgroup") == nil {
		return nil
	}
	if o.Bind == "" {
		if f.Changed("bind-cgroup") || f.Changed("owner") || f.Changed("bind-grace") {
			return fmt.Errorf("--owner and --bind-grace go with --bind-cgroup PATH")
		}
		return nil
	}
	if err := proto.ValidBindPath(o.Bind); err != nil {
		return fmt.Errorf("--bind-cgroup %q: give the cgroup's path below the cgroup2 root, as /proc/PID/cgroup shows it after 0:: (%v)", o.Bind, err)
	}
	if o.Owner != "" && proto.ValidUserName(o.Owner) != nil {
		return fmt.Errorf("--owner %q: a user name, 1 to 64 of A-Z a-z 0-9 . _ -", o.Owner)
	}
	if o.Report != "" || o.Key != "" || f.Changed("if-elapsed") || f.Changed("replace") || f.Changed("expire-after") {
		return fmt.Errorf("--bind-cgroup runs nothing: --report and --key (and what needs it) need a command perfrun runs")
	}
	o.InPlace = false
	return nil
}
