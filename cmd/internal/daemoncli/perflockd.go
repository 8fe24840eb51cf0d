// Package daemoncli holds perflockd's cobra command. It is apart from
// package cli so that perfrun, pls and wholock do not link the daemon.
package daemoncli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/spf13/cobra"

	"github.com/perflock/perflock/cmd/internal/cli"
	"github.com/perflock/perflock/daemon"
	"github.com/perflock/perflock/governor"
	"github.com/perflock/perflock/lockq"
	"github.com/perflock/perflock/runner"
)

// NewPerflockd is the daemon's command.
func NewPerflockd() *cobra.Command {
	var (
		socket, driver, policy, cgroupName, logLevel, logFormat string
		cpufreqRoot                                             string
		idleExit, maxExclusiveRuntime                           time.Duration
		maxWaiting, maxConns, maxConnsPerUser                   int
		sharedQuota                                             float64
		sharedCPUs, shieldCPUs, busyCommand                     string
		bindUsers                                               []string
		sharedMemHigh                                           uint64
		metricsAddr                                             string
	)
	cmd := &cobra.Command{
		Use:   "perflockd [flags]",
		Short: "serve perflock's fair lock queue",
		Long: `perflockd owns perflock's fair lock queue. perfrun, pls and wholock talk to it over
a Unix socket; it grants the machine in arrival order, places each job in a cgroup of
its own, and freezes shared (pls) jobs while an exclusive job runs.

You rarely start it by hand: the commands start a per-user daemon on demand, and a
system-wide one is installed as a service. Stopping it (SIGTERM) leaves running jobs
running.

STATE
  perfrun --key history (when each key last completed successfully) is kept in
  history.json: in /var/lib/perflock for the system daemon; for the per-user
  daemon in $XDG_STATE_HOME/perflock (~/.local/state/perflock), or, where that
  cannot be made (a user without a home), beside the socket, saying so once in
  the log; for any other daemon beside the socket. It is written off the
  daemon's loop, at most once a second, and keeps at most 1,000 keys per user
  and 10,000 in all (the oldest go first), for 30 days.
  Beside the socket: the ticket mark and rejoin key (tickets, key), the requests
  waiting (waiting: only they may rejoin after a restart), and a record of each
  running job (jobs/N.json), from which a restarted daemon adopts it whole.
  Files there that are not the daemon's own are not believed.

GOVERNOR
  perfrun --governor pins the CPU frequency through cpufreq in sysfs (--cpufreq-root)
  while an exclusive or group job runs; only a daemon running as root can, and
  only where the kernel has a cpufreq driver. Before it changes anything, it saves
  every CPU's governor and frequency range to governor.json beside the socket
  (/run/perflock for the system daemon). A restarted perflockd keeps the pin while
  a job it adopts from the earlier one runs and restores the settings when that
  job ends; when no such job runs, it restores them at once.

SOCKET
  The socket systemd passes (perflockd.socket, socket activation); else
  --socket, or PERFLOCK_SOCKET; otherwise /run/perflock/perflock.sock when run as
  root, else the per-user socket the commands use ($XDG_RUNTIME_DIR/perflock/perflock.sock,
  or /tmp/perflock-$UID/perflock.sock).

SHIELD
  --shield CPUS (off by default): while an exclusive or group job of the machine
  runs, everything else on the machine keeps to the housekeeping CPUS, and the job
  keeps every CPU. Under systemd: runtime AllowedCPUs= on init.scope, system.slice,
  user.slice, machine.slice and perflock-shared.slice; under cgroupfs: cpuset.cpus
  of the other top-level cgroups, where the cgroup2 tree offers the cpuset
  controller. Interrupts (/proc/irq/*/smp_affinity_list) and unbound kernel work
  (the workqueue cpumask) follow where the kernel lets them. The earlier values,
  an administrator's own included, are saved to shield.json beside the socket
  before anything changes and put back when the last such job ends; a perflockd
  killed meanwhile is replaced by one that keeps the shield while the job it adopts
  runs, and lowers it after. It cannot move per-CPU kernel threads, nor what
  boot-time isolcpus= or nohz_full= would; processes in the root cgroup stay where
  they are under cgroupfs. Where no shield can work (the none driver; a hybrid
  cgroup host whose cgroup2 tree has no cpuset), perflockd says so at start and
  serves without one; perfrun --report says "no shield" and why. wholock marks a
  shielded job.

DRIVERS
  systemd   each job in a transient scope: perfrun jobs in perflock-exclusive.slice with
            every online CPU (AllowedCPUs) and CPUWeight=10000, pls jobs in
            perflock-shared.slice with CPUWeight=idle, frozen with FreezeUnit on the slice
            (confirmed by FreezerState). systemctl status perflock.slice shows the jobs.
  cgroupfs  each job in its own cgroup under <cgroup2 mount>/<cgroup-name>/{exclusive,shared};
            shared jobs are frozen with cgroup.freeze (needs a writable cgroup2 tree: root).
  none      plain processes; the freeze policy falls back to drain.
  auto      systemd when it is PID 1 and its bus answers, else cgroupfs where it
            works, else none.
  One perflockd drives a set of jobs: the systemd driver claims the perflock units
  for its daemon, the cgroupfs driver its subtree. A second daemon asking for the
  same (a per-user one started as root, say) is refused with exit status 69, or
  with auto takes the next driver, so that it never adopts, freezes or thaws the
  first one's jobs.

CLUSTER SCHEDULERS
  A scheduler's Prolog may hold the machine for the scheduler's job: perfrun
  --bind-cgroup PATH asks for a lease bound to the cgroup the scheduler made (a
  Slurm job's), which ends once that cgroup has had a process and has none left,
  even if no Epilog runs. Only root and the users --bind-users names (the
  scheduler's own, say) may ask. --busy-command CMD runs "CMD busy REASON" once
  a local exclusive or group job of the machine waits or runs, and "CMD idle"
  once none does (also at start), one run at a time, a failed run retried after
  30 s: contrib/slurm's drains the node in Slurm meanwhile. See perflock's
  README, "Slurm".

METRICS
  --metrics ADDR serves Prometheus metrics at /metrics over HTTP: ADDR is unix:PATH
  (a Unix socket with the main socket's mode; its directory decides who may read
  them, as for wholock's listing) or a loopback HOST:PORT (127.0.0.1:9101,
  [::1]:9101, localhost:9101; port 0 picks a free one, logged as "serving
  metrics"). Other addresses are refused: put a reverse proxy in front to serve
  metrics further. Off by default. The metrics are listed in perflock's README.

POLICIES
  freeze    an exclusive job waits only for shared jobs to be frozen, then runs; they are
            thawed when no exclusive job holds or waits.
  drain     an exclusive job waits for running shared jobs to finish; later shared jobs
            wait behind it.

EXIT STATUS
  0 on a clean stop (also when another perflockd already serves the socket),
  64 on bad usage (an empty value such as --socket "" included), 69 when it cannot
  serve (socket, cgroups).`,
		Example: `  # a system daemon by hand, as root, logging JSON
  perflockd --driver cgroupfs --log-format json

  # drain instead of freezing
  perflockd --policy drain

  # no exclusive job may hold the machine for more than 4 hours
  perflockd --max-exclusive-runtime 4h

  # Prometheus metrics on a Unix socket; then: curl --unix-socket /run/perflock/metrics.sock http://x/metrics
  perflockd --metrics unix:/run/perflock/metrics.sock`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cli.NoEmptyValue(cmd, "socket", "driver", "policy", "cgroup-name", "cpufreq-root", "log-level", "log-format"); err != nil {
				return err
			}
			log, err := newLogger(cmd.ErrOrStderr(), logLevel, logFormat)
			if err != nil {
				return cli.Usage(err)
			}
			pol, err := parsePolicy(policy)
			if err != nil {
				return cli.Usage(err)
			}
			cfg := daemon.Config{
				Policy: pol, Driver: driver, CgroupName: cgroupName,
				IdleExit: idleExit, MaxWaiting: maxWaiting, Logger: log,
				MaxConns: maxConns, MaxConnsPerUser: maxConnsPerUser,
				Throttle:    daemon.Throttle{CPUQuota: sharedQuota / 100, CPUs: sharedCPUs, MemoryHigh: sharedMemHigh},
				CpufreqRoot: cpufreqRoot, Shield: shieldCPUs, BusyCommand: busyCommand,
			}
			if cfg.BindUIDs, err = lookupUIDs(bindUsers); err != nil {
				return cli.Usage(fmt.Errorf("--bind-users: %w", err))
			}
			if maxExclusiveRuntime < 0 {
				return cli.Usage(fmt.Errorf("--max-exclusive-runtime must not be negative"))
			}
			cfg.MaxExclusiveRuntime = maxExclusiveRuntime
			if metricsAddr != "" {
				if NewMetrics == nil {
					return cli.Usage(fmt.Errorf("--metrics: this program has no metrics: run the perflockd program"))
				}
				cfg.MetricsAddr, cfg.Metrics = metricsAddr, NewMetrics(log)
			}
			if cfg.Listener, err = activatedListener(); err != nil {
				return cli.Exit(runner.ExitUnavailable, err)
			}
			path := "(socket activation)"
			if cfg.Listener == nil {
				if path, err = daemonSocket(socket); err != nil {
					return cli.Exit(runner.ExitUnavailable, err)
				}
				cfg.Socket = path
			}
			if cfg.Socket == runner.SystemSocket || cfg.Listener != nil && cfg.Listener.Addr().String() == runner.SystemSocket {
				cfg.StateDir = SystemStateDir
			} else if us, err := runner.UserSocket(); err == nil && us == cfg.Socket {
				// The per-user daemon keeps its history with the user's
				// state; a user without a home (nobody, useradd -M) keeps
				// it beside the socket, in the user's private runtime
				// directory (the daemon's default).
				if cfg.StateDir, err = userStateDir(); err != nil {
					log.Warn("cannot make the state directory; keeping the job history beside the socket instead",
						"err", err, "dir", filepath.Dir(cfg.Socket))
				}
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			err = daemon.Run(ctx, cfg)
			if errors.Is(err, daemon.ErrRunning) {
				log.Info("another perflockd already serves this socket", "socket", path)
				return nil
			}
			if errors.Is(err, daemon.ErrConfig) {
				return cli.Usage(err)
			}
			if err != nil {
				return cli.Exit(runner.ExitUnavailable, err)
			}
			return nil
		},
	}
	cmd.AddCommand(newInstall())
	f := cmd.Flags()
	f.StringVar(&socket, "socket", "", "listen on `PATH` (default: see SOCKET)")
	f.StringVar(&driver, "driver", "auto", "where jobs run: auto, systemd, cgroupfs or none")
	f.StringVar(&policy, "policy", "freeze", "what shared jobs do while an exclusive job waits: freeze or drain")
	f.StringVar(&cgroupName, "cgroup-name", daemon.DefaultCgroupName, "the daemon's cgroup subtree (cgroupfs driver)")
	f.DurationVar(&idleExit, "idle-exit", 0, "exit after this long with no job and no client (0: never)")
	f.DurationVar(&maxExclusiveRuntime, "max-exclusive-runtime", 0, "stop exclusive and group jobs that have run `DURATION` (a job's own --max-runtime may be shorter; 0: no cap); e.g. 4h")
	f.Float64Var(&sharedQuota, "shared-cpu-quota", 0, "systemd: cap each pls job at `PERCENT` of one CPU (CPUQuota=; 0: no cap)")
	f.StringVar(&shieldCPUs, "shield", "", "while an exclusive or group job runs, confine all other work to the housekeeping `CPUS` (e.g. 0, or 0-1; default: no shield; see SHIELD)")
	f.StringVar(&sharedCPUs, "shared-cpus", "", "systemd: run pls jobs only on these `CPUS` (AllowedCPUs=, e.g. 0-3)")
	f.Uint64Var(&sharedMemHigh, "shared-memory-high", 0, "systemd: MemoryHigh= of each pls job in `BYTES` (0: none)")
	f.StringVar(&cpufreqRoot, "cpufreq-root", governor.DefaultSysfs, "the sysfs `PATH` of the CPUs whose cpufreq settings perfrun --governor pins, for containers and tests")
	f.IntVar(&maxWaiting, "max-waiting", daemon.DefaultMaxWaiting, "waiting requests allowed per user")
	f.IntVar(&maxConns, "max-conns", daemon.DefaultMaxConns, "open client connections allowed in all (raise the fd limit to match)")
	f.IntVar(&maxConnsPerUser, "max-conns-per-user", daemon.DefaultMaxConnsPerUser, "open client connections allowed per user")
	f.StringSliceVar(&bindUsers, "bind-users", nil, "`USERS` (names or uids, comma-separated) who may, besides root, bind a lease to a cgroup: a cluster scheduler's (see CLUSTER SCHEDULERS)")
	f.StringVar(&busyCommand, "busy-command", "", "run `CMD` busy REASON when a local exclusive job waits or runs, CMD idle when none does (see CLUSTER SCHEDULERS)")
	f.StringVar(&metricsAddr, "metrics", "", "serve Prometheus metrics at `ADDR`: unix:PATH or a loopback HOST:PORT such as 127.0.0.1:9101 (default: off; see METRICS)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&logFormat, "log-format", "text", "text or json")
	return cmd
}

// NewMetrics makes perflockd's metrics for --metrics. The perflockd program
// sets it; the other programs, which can also run the daemon (autostart),
// leave it nil and so do not link Prometheus.
var NewMetrics func(*slog.Logger) daemon.Metrics

// SystemStateDir keeps the system daemon's history of keyed jobs
// (perfrun --key); other daemons keep it beside their socket.
const SystemStateDir = "/var/lib/perflock"

func parsePolicy(s string) (lockq.Policy, error) {
	switch s {
	case "freeze":
		return lockq.Freeze, nil
	case "drain":
		return lockq.Drain, nil
	}
	return 0, fmt.Errorf("unknown policy %q (want freeze or drain)", s)
}

func newLogger(w interface{ Write([]byte) (int, error) }, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

// activatedListener returns the socket systemd passed (perflockd.socket),
// or nil when not socket-activated.
func activatedListener() (*net.UnixListener, error) {
	ls, err := activation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	switch {
	case len(ls) == 0:
		return nil, nil
	case len(ls) > 1:
		return nil, fmt.Errorf("socket activation: %d sockets passed, want one", len(ls))
	}
	ul, ok := ls[0].(*net.UnixListener)
	if !ok {
		return nil, fmt.Errorf("socket activation: passed a %T, want a Unix stream socket", ls[0])
	}
	ul.SetUnlinkOnClose(false) // systemd owns the socket file
	return ul, nil
}

// daemonSocket is where the daemon listens: the flag, PERFLOCK_SOCKET, the
// system socket for root, or the per-user socket. It creates the directory.
func daemonSocket(flag string) (string, error) {
	if flag == "" {
		flag = os.Getenv("PERFLOCK_SOCKET")
	}
	if flag != "" {
		return flag, nil
	}
	if os.Geteuid() == 0 {
		dir := filepath.Dir(runner.SystemSocket)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", fmt.Errorf("create %s: %w", dir, err)
		}
		return runner.SystemSocket, nil
	}
	return runner.UserSocket()
}

// userStateDir is $XDG_STATE_HOME/perflock (default ~/.local/state/perflock),
// created 0700; an error when it cannot be made (no home).
func userStateDir() (string, error) {
	base := os.Getenv("XDG_STATE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("state directory: %w", err)
		}
		base = filepath.Join(home, ".local", "state")
	}
	dir := filepath.Join(base, "perflock")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("state directory: %w", err)
	}
	return dir, nil
}

// lookupUIDs turns user names or uids into uids.
func lookupUIDs(users []string) ([]uint32, error) {
	var out []uint32
	for _, u := range users {
		if n, err := strconv.ParseUint(u, 10, 32); err == nil {
			out = append(out, uint32(n))
			continue
		}
		pw, err := user.Lookup(u)
		if err != nil {
			return nil, fmt.Errorf("no user %q", u)
		}
		n, err := strconv.ParseUint(pw.Uid, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("user %q has uid %q", u, pw.Uid)
		}
		out = append(out, uint32(n))
	}
	return out, nil
}
