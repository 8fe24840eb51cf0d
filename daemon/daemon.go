// Package daemon is perflockd: it serves the fair lock queue over a Unix
// socket, places granted jobs through a Driver, and freezes preemptible
// shared jobs while exclusive ones run.
//
// The decisions are made by the pure core (package daemon/core), which
// owns the queue and every job's state. This package is its shell: one
// goroutine, the loop, steps the core with what happens (requests from
// connections, results of drivers, time) and carries out the effects the
// core returns (replies, placements, freezes, pins, records). Connections,
// placements, emptiness watches, the freezer and the pin run in goroutines
// of their own that report back to the loop as events (a connection with
// nothing to read is parked, its goroutine ended, until it is readable);
// every goroutine is started by the server and waited for before Run
// returns.
//
// Files: daemon.go (configuration, start), socket.go (the listening
// socket), server.go (the loop), admission.go (connections admitted or
// refused without the loop), effects.go (the core's effects carried out),
// conn.go and outbox.go (one client: reading, writing), parker.go (idle
// connections kept without a goroutine, in an epoll set), render.go
// (replies, listings, the status line), driver*.go (where jobs run: none,
// cgroupfs, systemd), firstexit.go (a lease ended as soon as the job's
// first process has exited and its place is empty), adopt.go and
// process.go (jobs an earlier daemon left, by their cgroups or their
// processes), jobrecord.go, state.go,
// waiters.go, history.go (what outlives the process), statefile.go (which
// of those files the daemon may believe), governor.go (the CPU frequency
// pin), shield.go (perflockd --shield), report.go (run reports), watch.go
// (wholock --watch), metrics.go.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	sdnotify "github.com/coreos/go-systemd/v22/daemon"

	"github.com/perflock/perflock/internal/atomicfile"
	"github.com/perflock/perflock/lockq"
)

var (
	// ErrConfig: the configuration cannot work.
	ErrConfig = errors.New("daemon: bad configuration")
	// ErrRunning: another perflockd already serves the socket.
	ErrRunning = errors.New("daemon: another perflockd serves this socket")
)

// Defaults.
const (
	DefaultCgroupName = "perflock"
	DefaultMaxWaiting = 128 // waiting requests per user
	// DefaultMaxConns and DefaultMaxConnsPerUser cap client connections.
	DefaultMaxConns        = 4096
	DefaultMaxConnsPerUser = 1024
	writeTimeout           = 10 * time.Second
	stopGrace              = 10 * time.Second // SIGTERM to SIGKILL when stopping a job
	driverTimeout          = 30 * time.Second // one freeze, thaw, placement, or the adoption at start
	statusInterval         = time.Second
	maxOutbox              = 64 // messages queued to one client before it is dropped
	maxCommandInStatus     = 120
)

// handshakeTimeout bounds how long a client may take to send its hello and
// its request; tests shorten it.
var handshakeTimeout = 10 * time.Second

// After a restart, new requests wait rejoinGrace for earlier waiters to
// rejoin; rejoining is possible for rejoinWindow.
var (
	rejoinGrace  = 3 * time.Second
	rejoinWindow = time.Minute
)

// Config configures Run.
type Config struct {
	// Socket is the path to listen on. Its directory must exist.
	Socket string
	// Listener, when set, is used instead of listening on Socket (socket
	// activation). Run closes it.
	Listener *net.UnixListener
	// SocketMode is the listening socket's permission bits (default 0666:
	// the directory's permissions decide who may connect).
	SocketMode os.FileMode
	// Policy for preemptible shared jobs: lockq.Freeze (default) or
	// lockq.Drain. Freeze falls back to Drain where the driver cannot freeze.
	Policy lockq.Policy
	// Driver: "auto" (default), "cgroupfs" or "none".
	Driver string
	// CgroupName is the daemon's subtree under the cgroup2 mount (cgroupfs).
	CgroupName string
	// Throttle limits shared jobs beyond the idle CPU weight (systemd).
	Throttle Throttle
	// IdleExit, when positive, stops the daemon once it has had no
	// connection and no job for that long.
	IdleExit time.Duration
	// MaxWaiting caps each user's waiting requests (default 128).
	MaxWaiting int
	// MaxConns caps open connections (default 4096), MaxConnsPerUser each
	// user's (default 1024); more are refused with a "limit" error.
	MaxConns, MaxConnsPerUser int
	// RunDir holds the state that outlives a daemon process (ticket mark,
	// rejoin key); default: the socket's directory.
	RunDir string
	// StateDir holds what must outlive reboots as well: the history of
	// keyed jobs (history.json); default: RunDir. The system daemon uses
	// /var/lib/perflock.
	StateDir string
	// MaxExclusiveRuntime, when positive, caps how long an exclusive or
	// group job may run: its max runtime becomes the smaller of its own and
	// this.
	MaxExclusiveRuntime time.Duration
	// MetricsAddr, when set, is where Metrics serves: "unix:PATH", or a
	// loopback HOST:PORT (anything else is refused).
	MetricsAddr string
	// Metrics observes the daemon and serves MetricsAddr; it must be set
	// when MetricsAddr is, and is unused otherwise.
	Metrics Metrics
	// Shield, when set, is the housekeeping CPUs (a list such as "0" or
	// "0-1"): while an exclusive or group job of the machine runs,
	// everything else on the machine is confined to them (perflockd
	// --shield). Default: no shield.
	Shield string
	// BindUIDs may, besides root, bind a lease to a cgroup they name
	// (acquire's bind: a cluster scheduler's Prolog; perflockd
	// --bind-users).
	BindUIDs []uint32
	// BusyCommand, when set, is run as "BusyCommand busy REASON" when a
	// local exclusive or group job of the machine starts to wait or hold
	// while none did, and as "BusyCommand idle" when none is left
	// (perflockd --busy-command: contrib/slurm drains the node meanwhile).
	BusyCommand string
	// CpufreqRoot is the cpufreq sysfs tree that --governor pins (default
	// governor.DefaultSysfs); containers and tests point it elsewhere.
	CpufreqRoot string
	// GovernorState is where the settings before a pin are saved, so that
	// a restarted daemon can restore them; default RunDir/governor.json.
	GovernorState string
	// Logger receives structured logs (default: slog.Default()).
	Logger *slog.Logger
	// OnReady, if set, is called once the daemon accepts connections.
	OnReady func()

	// drv, when set, is the driver instead of the one Driver names (tests).
	drv Driver
}

// Run serves until ctx is done or, with IdleExit, the daemon has been idle.
// It returns ErrRunning when another daemon holds the socket's lock.
// Stopping leaves every job running.
func Run(ctx context.Context, cfg Config) error {
	s, err := open(ctx, cfg)
	if err != nil {
		return err
	}
	return s.serve()
}

func (cfg *Config) setDefaults() {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.CgroupName == "" {
		cfg.CgroupName = DefaultCgroupName
	}
	if cfg.MaxWaiting <= 0 {
		cfg.MaxWaiting = DefaultMaxWaiting
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConnsPerUser <= 0 {
		cfg.MaxConnsPerUser = DefaultMaxConnsPerUser
	}
	if cfg.SocketMode == 0 {
		cfg.SocketMode = 0o666
	}
}

// open does everything Run does before it serves: the socket, the driver,
// the state of an earlier daemon, and the adoption of the jobs it left. On
// an error nothing is left open.
func open(ctx context.Context, cfg Config) (_ *server, err error) {
	cfg.setDefaults()
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	ln, unlock, err := openSocket(cfg)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { ln.Close() }, unlock)
	mln, err := openMetrics(cfg)
	if err != nil {
		return nil, err
	}
	if mln != nil {
		undo = append(undo, func() { mln.Close() })
	}
	drv := cfg.drv
	if drv == nil {
		if drv, err = OpenDriver(ctx, cfg.Driver, cfg.CgroupName, cfg.Throttle, cfg.Logger); err != nil {
			return nil, err
		}
	}
	undo = append(undo, func() { drv.Close() })
	if cfg.RunDir == "" {
		cfg.RunDir = filepath.Dir(ln.Addr().String())
	}
	s, err := newServerFromState(ctx, cfg, drv)
	if err != nil {
		return nil, err
	}
	s.ln, s.mln, s.unlock = ln, mln, unlock
	if cfg.Listener == nil {
		s.sockID = idOf(cfg.Socket)
	}
	s.goFn(func() { s.history.run(s.ctx) }) // the history's writer; shutdown flushes what is left
	undo = append(undo, func() { s.stop(); s.wg.Wait() })
	// Before anything is granted: re-adopt what an earlier daemon left
	// running, and keep frozen what must stay frozen.
	actx, cancel := context.WithTimeout(ctx, driverTimeout)
	err = s.adopt(actx)
	cancel()
	if err != nil {
		return nil, err
	}
	return s, nil
}

// newServerFromState makes the server from what an earlier daemon left in
// the run and state directories.
func newServerFromState(ctx context.Context, cfg Config, drv Driver) (*server, error) {
	if cfg.StateDir == "" {
		cfg.StateDir = cfg.RunDir
	}
	if cfg.GovernorState == "" {
		cfg.GovernorState = filepath.Join(cfg.RunDir, "governor.json")
	}
	st, err := loadRunState(cfg.RunDir, cfg.Logger)
	if err != nil {
		return nil, err
	}
	hist := loadHistory(cfg.StateDir, cfg.Logger)
	saved, _, err := loadWaiters(cfg.RunDir)
	if err != nil {
		cfg.Logger.Warn("the waiting requests of an earlier perflockd cannot be read: they queue anew", "err", err)
	}
	return newServer(ctx, cfg, drv, st, hist, saved), nil
}

// serve runs the loop until ctx is done or the daemon has been idle, then
// lets go of the socket and waits for every goroutine.
func (s *server) serve() error {
	log := s.log
	if n := len(s.core.Waiters()); n > 0 {
		log.Info("restarted: waiting clients may rejoin before new requests are queued", "waiting", n, "grace", rejoinGrace.String())
	}
	log.Info("perflockd serving", "socket", s.ln.Addr().String(), "driver", s.drv.Name(), "policy", s.core.Policy().String(), "pid", os.Getpid())
	if s.mln != nil {
		info := Info{Driver: s.drv.Name(), Policy: s.core.Policy().String()}
		mln := s.mln
		s.goFn(func() {
			if err := s.cfg.Metrics.Serve(s.ctx, mln, info, s.stats); err != nil && s.ctx.Err() == nil {
				log.Error("serving metrics failed; the daemon goes on without them", "err", err)
			}
		})
		log.Info("serving metrics", "addr", mln.Addr().String())
	}
	if s.cfg.OnReady != nil {
		s.cfg.OnReady()
	}
	sdnotify.SdNotify(false, sdnotify.SdNotifyReady+"\nSTATUS=idle")
	// The waiting file says from now on which tickets this daemon handed
	// out: after a crash, those above its mark may rejoin, however soon.
	if err := atomicfile.Replace(filepath.Join(s.cfg.RunDir, waitersFile), encodeWaiters(s.core.Waiters(), s.core.LastTicket(), false), 0o600); err != nil {
		log.Warn("saving the waiting requests; after a restart they cannot rejoin at their places", "err", err)
	}
	defer s.shutdown()
	if p, err := newParker(s); err != nil {
		log.Warn("every connection keeps a goroutine of its own (no epoll set for idle ones)", "err", err)
	} else {
		s.parker = p
		s.goFn(func() { p.run(s.ctx) })
	}
	s.goFn(s.accept)
	s.busy.start()
	return s.loop()
}

// openMetrics listens where --metrics says, if it says anything.
func openMetrics(cfg Config) (net.Listener, error) {
	if cfg.MetricsAddr == "" {
		return nil, nil
	}
	if cfg.Metrics == nil {
		return nil, fmt.Errorf("%w: --metrics: this program has no metrics: run the perflockd program", ErrConfig)
	}
	network, addr, err := parseMetricsAddr(cfg.MetricsAddr)
	if err != nil {
		return nil, err
	}
	return listenMetrics(network, addr, cfg.SocketMode)
}
