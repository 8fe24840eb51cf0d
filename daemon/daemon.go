// Package daemon is perflockd: it serves the fair lock queue (package lockq)
// over a Unix socket, places granted jobs through a Driver, and freezes
// preemptible shared jobs while exclusive ones run.
//
// One goroutine, the loop, owns the queue and every job; connections,
// placements, emptiness watches and the freezer run in goroutines of their
// own that report back to the loop as events. Every goroutine is started by
// the server and waited for before Run returns.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	sdnotify "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/governor"
	"github.com/perflock/perflock/lockq"
	"github.com/perflock/perflock/proto"
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
	driverTimeout          = 30 * time.Second // one freeze, thaw, or the adoption at start
	statusInterval         = time.Second
	maxOutbox              = 64 // messages queued to one client before it is dropped
	maxListedHolders       = 3
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
// It returns ErrRunning when another daemon holds the socket's lock. Stopping
// leaves every job running.
func Run(ctx context.Context, cfg Config) error {
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
	log := cfg.Logger
	var metricsNet, metricsAddr string
	if cfg.MetricsAddr != "" {
		if cfg.Metrics == nil {
			return fmt.Errorf("%w: --metrics: this program has no metrics: run the perflockd program", ErrConfig)
		}
		var err error
		if metricsNet, metricsAddr, err = parseMetricsAddr(cfg.MetricsAddr); err != nil {
			return err
		}
	}
	ln := cfg.Listener
	if ln == nil {
		if cfg.Socket == "" {
			return fmt.Errorf("%w: no socket path", ErrConfig)
		}
		if err := checkSocketDir(filepath.Dir(cfg.Socket)); err != nil {
			return err
		}
		unlock, err := lockInstance(cfg.Socket + ".lock")
		if err != nil {
			return err
		}
		defer unlock()
		if ln, err = listen(cfg.Socket, cfg.SocketMode); err != nil {
			return err
		}
	}
	var mln net.Listener
	if metricsNet != "" {
		var err error
		if mln, err = listenMetrics(metricsNet, metricsAddr, cfg.SocketMode); err != nil {
			ln.Close()
			return err
		}
		defer mln.Close() // on early returns; Serve closes it too
	}
	drv := cfg.drv
	var err error
	if drv == nil {
		drv, err = OpenDriver(ctx, cfg.Driver, cfg.CgroupName, cfg.Throttle, log)
	}
	if err != nil {
		ln.Close()
		return err
	}
	if c, ok := drv.(io.Closer); ok {
		defer c.Close()
	}
	policy := cfg.Policy
	if policy == lockq.Freeze && !drv.CanFreeze() {
		log.Warn("driver cannot freeze: shared jobs are drained instead", "driver", drv.Name())
		policy = lockq.Drain
	}
	if cfg.RunDir == "" {
		cfg.RunDir = filepath.Dir(ln.Addr().String())
	}
	st, err := loadRunState(cfg.RunDir)
	if err != nil {
		ln.Close()
		return err
	}
	if cfg.StateDir == "" {
		cfg.StateDir = cfg.RunDir
	}
	hist, err := loadHistory(cfg.StateDir)
	if err != nil {
		ln.Close()
		return err
	}
	if cfg.GovernorState == "" {
		cfg.GovernorState = filepath.Join(cfg.RunDir, "governor.json")
	}
	s := newServer(cfg, drv, policy)
	s.ctx, s.stop = context.WithCancel(ctx)
	if testHookServer != nil {
		testHookServer(s)
	}
	s.state = st
	s.history = hist
	s.q.Reserve(st.started)
	// Before anything is granted: re-adopt what an earlier daemon left
	// running, and keep frozen what must stay frozen.
	actx, cancel := context.WithTimeout(ctx, driverTimeout)
	err = s.adopt(actx)
	cancel()
	if err != nil {
		s.stop()
		s.wg.Wait()
		ln.Close()
		return err
	}
	// A pin an earlier daemon left: kept for its adopted job, or restored.
	s.startPin()
	if st.started > 0 && st.waiters != 0 {
		// Clients that waited on the earlier daemon reconnect and rejoin
		// with their old tickets: new requests wait until they had time to.
		s.graceUntil = time.Now().Add(rejoinGrace)
		log.Info("restarted: waiting clients may rejoin before new requests are queued", "grace", rejoinGrace.String())
	}
	log.Info("perflockd serving", "socket", ln.Addr().String(), "driver", drv.Name(), "policy", policy.String(), "pid", os.Getpid())
	if mln != nil {
		info := Info{Driver: drv.Name(), Policy: policy.String()}
		s.goFn(func() {
			if err := cfg.Metrics.Serve(s.ctx, mln, info, s.stats); err != nil && s.ctx.Err() == nil {
				log.Error("serving metrics failed; the daemon goes on without them", "err", err)
			}
		})
		log.Info("serving metrics", "addr", mln.Addr().String())
	}
	if cfg.OnReady != nil {
		cfg.OnReady()
	}
	sdnotify.SdNotify(false, sdnotify.SdNotifyReady+"\nSTATUS=idle")
	return s.serve(ln)
}

// lockInstance takes an exclusive lock that lives as long as the daemon.
func lockInstance(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("daemon: lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (lock %s)", ErrRunning, path)
		}
		return nil, fmt.Errorf("daemon: lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// listen replaces a stale socket file (its daemon is gone: we hold the lock)
// and listens on path, in a directory checkSocketDir has approved.
func listen(path string, mode os.FileMode) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%w: %s exists and is not a socket", ErrConfig, path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("daemon: remove stale socket: %w", err)
		}
	}
	// Create the socket with no access, then open it up: no window in which
	// it has the wrong mode.
	old := unix.Umask(0o777)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("daemon: listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("daemon: chmod %s: %w", filepath.Base(path), err)
	}
	return ln, nil
}

// checkSocketDir refuses a socket directory that is a symlink, belongs to
// another user (root's is fine), or that group or others may write to
// without the sticky bit: someone else could replace the socket.
func checkSocketDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("%w: socket directory: %w", ErrConfig, err)
	}
	if fi.Mode()&os.ModeSymlink != 0 || !fi.IsDir() {
		return fmt.Errorf("%w: socket directory %s is a symlink or not a directory", ErrConfig, dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%w: socket directory %s belongs to uid %d, not to root or this user", ErrConfig, dir, st.Uid)
	}
	if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&os.ModeSticky == 0 {
		return fmt.Errorf("%w: socket directory %s is writable by group or others (mode %v)", ErrConfig, dir, fi.Mode().Perm())
	}
	return nil
}

// server is the daemon's state; loop-owned fields are touched only by the
// loop goroutine.
type server struct {
	cfg    Config
	log    *slog.Logger
	drv    Driver
	policy lockq.Policy
	start  time.Time

	ctx    context.Context    // the server's lifetime
	stop   context.CancelFunc // ends ctx
	events chan func()
	wg     sync.WaitGroup
	obs    Observer // the metrics, or a no-op

	// Loop-owned.
	q          *lockq.Queue
	jobs       map[lockq.Ticket]*job
	conns      map[*conn]struct{}
	waitingBy  map[uint32]int // waiting requests per uid
	users      map[uint32]string
	frozenSet  map[lockq.Ticket]bool // asked to suspend: false until confirmed
	wantFrozen bool
	isFrozen   bool
	freezing   bool // a freezer call is under way
	dirty      bool // the queue changed since the last status broadcast
	idleSince  time.Time
	lastStatus string // the last STATUS= sent to the service manager
	state      *runState
	history    *history
	graceUntil time.Time // until then, new requests are parked for rejoiners
	parked     []func()
	connsBy    map[uint32]int // open connections per uid
	// Placements: under way, and waiting their turn (placeInTurn).
	placing                 int
	placeFirst, placeShared []func(done func())
	pin                     pinState // --governor
	watchers                map[*conn]struct{}
	watchDue                bool        // some watcher may need a listing
	watchTimer              *time.Timer // when a watcher's coalescing interval ends
}

func newServer(cfg Config, drv Driver, policy lockq.Policy) *server {
	var obs Observer = nopObserver{}
	if cfg.MetricsAddr != "" && cfg.Metrics != nil {
		obs = cfg.Metrics
	}
	return &server{
		cfg: cfg, log: cfg.Logger, drv: drv, policy: policy, start: time.Now(), obs: obs,
		events:    make(chan func(), 256),
		q:         lockq.New(policy),
		jobs:      make(map[lockq.Ticket]*job),
		conns:     make(map[*conn]struct{}),
		waitingBy: make(map[uint32]int),
		users:     make(map[uint32]string),
		frozenSet: make(map[lockq.Ticket]bool),
		connsBy:   make(map[uint32]int),
		watchers:  make(map[*conn]struct{}),
		idleSince: time.Now(),
		pin:       pinState{p: governor.New(cfg.CpufreqRoot, cfg.GovernorState), users: make(map[lockq.Ticket]bool)},
	}
}

// post hands f to the loop; it gives up when the server stops.
func (s *server) post(f func()) {
	select {
	case s.events <- f:
	case <-s.ctx.Done():
	}
}

// goFn runs f in a goroutine the server waits for.
func (s *server) goFn(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

func (s *server) serve(ln *net.UnixListener) error {
	ctx, cancel := s.ctx, s.stop
	defer func() {
		sdnotify.SdNotify(false, sdnotify.SdNotifyStopping)
		_, waiting := s.q.Len()
		if err := s.state.stop(waiting + len(s.parked)); err != nil {
			s.log.Error("saving state", "err", err)
		}
		cancel()
		ln.Close()
		for c := range s.conns {
			c.nc.Close()
		}
		s.wg.Wait()
		s.log.Info("perflockd stopped; jobs keep running", "jobs", len(s.jobs))
	}()
	s.goFn(func() { s.accept(ln) })

	deadline := time.NewTimer(time.Hour)
	deadline.Stop()
	s.watchTimer = time.NewTimer(time.Hour)
	s.watchTimer.Stop()
	defer s.watchTimer.Stop()
	status := time.NewTicker(statusInterval)
	defer status.Stop()
	var grace <-chan time.Time
	if d := time.Until(s.graceUntil); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		grace = t.C
	}
	var idle <-chan time.Time
	if s.cfg.IdleExit > 0 {
		t := time.NewTicker(min(s.cfg.IdleExit/4+time.Millisecond, time.Second))
		defer t.Stop()
		idle = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case f := <-s.events:
			f()
		case now := <-deadline.C:
			s.apply(s.q.Expire(now))
		case <-s.watchTimer.C:
			s.watchDue = true
		case <-grace:
			parked := s.parked
			s.parked = nil
			for _, f := range parked {
				f()
			}
		case <-status.C:
			s.broadcast()
			s.notifyStatus()
		case now := <-idle:
			if len(s.conns) == 0 && len(s.jobs) == 0 && now.Sub(s.idleSince) >= s.cfg.IdleExit {
				s.log.Info("idle, exiting", "after", s.cfg.IdleExit.String())
				return nil
			}
		}
		if s.watchDue {
			s.feedWatchers(time.Now())
		}
		if d, ok := s.q.NextDeadline(); ok {
			deadline.Reset(time.Until(d))
		} else {
			deadline.Stop()
		}
		if len(s.conns) > 0 || len(s.jobs) > 0 {
			s.idleSince = time.Now()
		}
	}
}

func (s *server) accept(ln *net.UnixListener) {
	for {
		nc, err := ln.AcceptUnix()
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Error("accept failed; no new connections", "err", err)
			}
			return
		}
		cred, err := peerCred(nc)
		if err != nil {
			s.log.Warn("connection without peer credentials", "err", err)
			nc.Close()
			continue
		}
		c := newConn(s, nc, cred)
		s.post(func() { s.register(c) })
	}
}

// register admits a connection within the limits and starts its reader;
// over a limit it answers "limit" and closes.
func (s *server) register(c *conn) {
	uid := c.cred.Uid
	if len(s.conns) >= s.cfg.MaxConns || s.connsBy[uid] >= s.cfg.MaxConnsPerUser {
		s.log.Warn("connection refused: limit reached", "uid", uid, "conns", len(s.conns), "of_user", s.connsBy[uid])
		c.nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		proto.Write(c.nc, proto.Msg{Type: proto.TError, Code: proto.CodeLimit,
			Message: fmt.Sprintf("perflockd has too many connections (%d open, %d of this user): try again later", len(s.conns), s.connsBy[uid])})
		c.stopOnClose()
		c.nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.connsBy[uid]++
	s.goFn(c.read) // the writer starts when there is something to write
}

func peerCred(nc *net.UnixConn) (*unix.Ucred, error) {
	raw, err := nc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	err = raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil {
		return nil, err
	}
	return cred, cerr
}
