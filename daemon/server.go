package daemon

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	sdnotify "github.com/coreos/go-systemd/v22/daemon"

	"github.com/perflock/perflock/cgroup"
	"github.com/perflock/perflock/daemon/core"
	"github.com/perflock/perflock/governor"
	"github.com/perflock/perflock/internal/atomicfile"
	"github.com/perflock/perflock/internal/cpuset"
	"github.com/perflock/perflock/lockq"
	"github.com/perflock/perflock/shield"
)

// server is the shell around the core. Loop-owned fields are touched only
// by the loop goroutine.
type server struct {
	cfg    Config
	log    *slog.Logger
	drv    Driver
	base   time.Time // the clock's origin (see now)
	ctx    context.Context
	stop   context.CancelFunc
	events chan func()
	wg     sync.WaitGroup
	obs    Observer // the metrics, or a no-op
	pinner *governor.Pinner
	shield *shield.Shield
	hk     cpuset.Set // the housekeeping CPUs of a shield that can work
	// shieldWhy says why --shield was asked for and cannot work, for reports.
	shieldWhy string
	state     *runState // set before the loop; read-only after but for reserve
	ln        *net.UnixListener
	mln       net.Listener
	unlock    func()
	sockID    socketID // the socket file made, zero with socket activation
	connID    atomic.Uint64
	adm       admission // the accept goroutine's: open connections per user
	parker    *parker   // idle connections, read again when readable; nil: none

	// Loop-owned.
	core       *core.Core
	history    *history
	conns      map[core.ConnID]*conn
	users      map[uint32]string
	places     map[lockq.Ticket]*place
	pending    []core.Event // follow-ups of the effects being carried out
	gen        uint64       // the core's Gen the watchers and the status line have seen
	idleSince  time.Time
	lastStatus string // the last STATUS= sent to the service manager
	watchers   map[*conn]struct{}
	watchDue   bool        // some watcher may need a listing
	watchTimer *time.Timer // when a watcher's coalescing interval ends
	// The waiting file: a rewrite is scheduled, or under way.
	waitersDue, waitersWriting bool
	busy                       *busyHook
	cgroup2                    string // the cgroup2 mount, "" if none: where bound leases are watched
}

// place is a placed (or adopted) job's place and what goes with it.
type place struct {
	p         Placement
	stopWatch context.CancelFunc
	start     *runSample // a run report's first figures
	// first is a pidfd of the job's first process until watchEmpty hands
	// it to watchFirst; nil without one.
	first *os.File
}

func newServer(ctx context.Context, cfg Config, drv Driver, st *runState, hist *history, saved savedWaiters) *server {
	var obs Observer = nopObserver{}
	if cfg.MetricsAddr != "" && cfg.Metrics != nil {
		obs = cfg.Metrics
	}
	s := &server{
		cfg: cfg, log: cfg.Logger, drv: drv, base: time.Now(), obs: obs, state: st, history: hist,
		events: make(chan func(), 256),
		pinner: governor.New(cfg.CpufreqRoot, cfg.GovernorState),
		shield: newShield(cfg.RunDir, drv),
		conns:  map[core.ConnID]*conn{},
		users:  map[uint32]string{}, adm: admission{by: map[uint32]int{}},
		places: map[lockq.Ticket]*place{}, watchers: map[*conn]struct{}{},
		watchTimer: time.NewTimer(time.Hour),
	}
	s.watchTimer.Stop()
	s.ctx, s.stop = context.WithCancel(ctx)
	s.busy = newBusyHook(s, cfg.BusyCommand)
	s.cgroup2, _ = cgroup.Mountpoint()
	s.idleSince = s.base
	now := s.now()
	ccfg := core.Config{
		Policy: cfg.Policy, CanFreeze: drv.CanFreeze(),
		MaxWaiting: cfg.MaxWaiting, MaxExclusiveRuntime: core.Duration(cfg.MaxExclusiveRuntime),
		TicketMark: st.started, Rejoinable: saved.tickets, RejoinUntil: core.Add(now, core.Duration(rejoinWindow)),
		RejoinAfter: st.started, // nothing is known to have waited that was not saved
		TellBusy:    cfg.BusyCommand != "",
	}
	if saved.found && !saved.clean {
		ccfg.RejoinAfter = min(saved.last, st.started) // a crash: newer tickets may have waited
	}
	if len(saved.tickets) > 0 || ccfg.RejoinAfter < st.started {
		// Clients that waited on the earlier daemon reconnect and rejoin
		// with their old tickets: new requests wait until they had time to.
		ccfg.GraceUntil = core.Add(now, core.Duration(rejoinGrace))
	}
	if cfg.Policy == lockq.Freeze && !drv.CanFreeze() {
		cfg.Logger.Warn("driver cannot freeze: shared jobs are drained instead", "driver", drv.Name())
	}
	s.checkShield(ctx)
	ccfg.Shield = !s.hk.IsEmpty()
	s.core = core.New(ccfg)
	return s
}

// now reads the clock the core runs on: Unix nanoseconds that advance
// with the monotonic clock.
func (s *server) now() core.Time {
	return core.Time(s.base.UnixNano() + int64(time.Since(s.base)))
}

// wall is t on the wall clock.
func wall(t core.Time) time.Time { return time.Unix(0, int64(t)) }

// step steps the core and carries out its effects, then the follow-up
// events those effects produced at once, in order.
func (s *server) step(e core.Event) {
	s.pending = append(s.pending, e)
	if len(s.pending) > 1 {
		return // an outer step is draining
	}
	for len(s.pending) > 0 {
		for _, eff := range s.core.Step(s.pending[0]) {
			s.do(eff)
		}
		s.pending = s.pending[1:]
	}
	s.pending = nil
	if err := s.state.reserve(s.core.LastTicket()); err != nil {
		s.log.Error("saving the ticket mark", "err", err)
	}
	if g := s.core.Gen(); g != s.gen {
		s.gen = g
		s.changed()
		s.waitersChanged()
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

// loop is the one goroutine that steps the core.
func (s *server) loop() error {
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()
	defer s.watchTimer.Stop()
	status := time.NewTicker(statusInterval)
	defer status.Stop()
	var idle <-chan time.Time
	if s.cfg.IdleExit > 0 {
		t := time.NewTicker(min(s.cfg.IdleExit/4+time.Millisecond, time.Second))
		defer t.Stop()
		idle = t.C
	}
	for {
		s.setWake(wake)
		select {
		case <-s.ctx.Done():
			return nil
		case f := <-s.events:
			f()
		case <-wake.C:
			s.step(core.Tick{Now: s.now()})
		case <-s.watchTimer.C:
			s.watchDue = true
		case <-status.C:
			s.step(core.Tick{Now: s.now()})
			s.notifyStatus()
			if err := s.checkSocket(); err != nil {
				return err
			}
		case now := <-idle:
			if len(s.conns) == 0 && s.core.Idle() && now.Sub(s.idleSince) >= s.cfg.IdleExit {
				s.log.Info("idle, exiting", "after", s.cfg.IdleExit.String())
				return nil
			}
		}
		if s.watchDue {
			s.feedWatchers(time.Now())
		}
		if len(s.conns) > 0 || !s.core.Idle() {
			s.idleSince = time.Now()
		}
	}
}

// setWake sets the timer to the core's next wake.
func (s *server) setWake(t *time.Timer) {
	at, ok := s.core.NextWake()
	if !ok {
		t.Stop()
		return
	}
	t.Reset(max(time.Duration(at-s.now()), 0))
}

// shutdown saves what a restarted daemon needs and lets go of everything
// but the jobs.
func (s *server) shutdown() {
	sdnotify.SdNotify(false, sdnotify.SdNotifyStopping)
	waiters := s.core.Waiters()
	if err := atomicfile.Replace(filepath.Join(s.cfg.RunDir, waitersFile), encodeWaiters(waiters, s.core.LastTicket(), true), 0o600); err != nil {
		s.log.Error("saving the waiting requests", "err", err)
	}
	if err := s.state.stop(len(waiters)); err != nil {
		s.log.Error("saving state", "err", err)
	}
	s.stop()
	s.ln.Close()
	for _, c := range s.conns {
		c.nc.Close()
	}
	s.wg.Wait()
	s.history.flush() // its writer has stopped: save what it had yet to
	s.drv.Close()
	s.unlock()
	s.log.Info("perflockd stopped; jobs keep running", "jobs", len(s.places))
}

// closed forgets a connection; the core hears that its client is gone.
func (s *server) closed(c *conn) {
	if s.conns[c.id] != c {
		return
	}
	delete(s.conns, c.id)
	s.adm.leave(c.cred.Uid)
	s.unwatch(c)
	s.step(core.Closed{Conn: c.id, Now: s.now()})
}

func (s *server) userName(uid uint32) string {
	if n, ok := s.users[uid]; ok {
		return n
	}
	n := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(n); err == nil {
		n = u.Username
	}
	s.users[uid] = n
	return n
}
