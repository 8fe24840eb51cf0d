package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/perflock/perflock/daemon/core"
	"github.com/perflock/perflock/lockq"
)

// Metrics serves the daemon's metrics (perflockd --metrics; package
// daemon/metrics is the Prometheus one). The daemon tells it of events as
// an Observer and runs Serve in a goroutine of its own.
type Metrics interface {
	Observer
	// Serve answers scrapes on ln until ctx ends, then closes ln and
	// returns. stats reads the queue's state through the daemon's loop.
	Serve(ctx context.Context, ln net.Listener, info Info, stats func(context.Context) (Stats, error)) error
}

// Observer is told of the daemon's events by the loop goroutine: its
// methods must be quick and must not block.
type Observer interface {
	// Granted: a request of this mode was granted after waiting so long
	// (from its acquire, or its rejoin after a restart).
	Granted(mode lockq.Kind, waited time.Duration)
	// Busy: a nonblocking request (perfrun -n) was refused.
	Busy(mode lockq.Kind)
	// TimedOut: a request's timeout (perfrun -t) passed while it waited.
	TimedOut(mode lockq.Kind)
	// Cancelled: a request left the line, or a running job is being
	// stopped, for reason (one of the Cancel* constants).
	Cancelled(mode lockq.Kind, reason string)
	// Freezer: one freeze (or thaw) of the shared jobs took so long and
	// ended with err.
	Freezer(freeze bool, took time.Duration, err error)
	// Exited: a job's lease ended; result is one of the Result* constants.
	Exited(mode lockq.Kind, result string)
}

// Why a request was cancelled.
const (
	CancelClient  = core.CancelClient  // its client hung up while it waited
	CancelUser    = core.CancelUser    // wholock --cancel
	CancelReplace = core.CancelReplace // a newer job of its key with --replace
	CancelExpire  = core.CancelExpire  // a newer job of its key with --expire-after
)

// How a job ended, from the status its client reported with done.
const (
	ResultSuccess = core.ResultSuccess // status 0
	ResultFailure = core.ResultFailure // 1…127
	ResultSignal  = core.ResultSignal  // 128 and above: died of a signal, as shells report it
	ResultUnknown = core.ResultUnknown // no status: the client was gone (or the job adopted)
)

// Modes and states of the queue as Stats counts them.
var (
	ModeNames  = [...]string{lockq.Exclusive: "exclusive", lockq.Shared: "shared", lockq.Group: "group"}
	StateNames = [...]string{StateWaiting: "waiting", StateRunning: "running", StateFrozen: "frozen"}
)

// Request states in Stats: waiting; holding (granted, placed, or being
// frozen); frozen (the freeze is confirmed).
const (
	StateWaiting = iota
	StateRunning
	StateFrozen
)

// Info describes the serving daemon.
type Info struct {
	Driver, Policy string
}

// Stats is the queue at one moment, read by the loop.
type Stats struct {
	// Requests counts requests by mode (lockq.Kind) and state (State*).
	Requests [len(ModeNames)][len(StateNames)]int
	// Conns is the number of open client connections.
	Conns int
}

// statsTimeout bounds how long a scrape waits for the loop.
var statsTimeout = 5 * time.Second

// stats reads Stats through the loop, giving up when ctx ends, after
// statsTimeout, or when the daemon stops.
func (s *server) stats(ctx context.Context) (Stats, error) {
	ctx, cancel := context.WithTimeout(ctx, statsTimeout)
	defer cancel()
	ch := make(chan Stats, 1)
	f := func() { ch <- s.snapshot() }
	select {
	case s.events <- f:
	case <-ctx.Done():
		return Stats{}, fmt.Errorf("daemon: the loop did not take the request for metrics: %w", ctx.Err())
	case <-s.ctx.Done():
		return Stats{}, errors.New("daemon: stopping")
	}
	select {
	case st := <-ch:
		return st, nil
	case <-ctx.Done():
		return Stats{}, fmt.Errorf("daemon: the loop did not answer the request for metrics: %w", ctx.Err())
	case <-s.ctx.Done():
		return Stats{}, errors.New("daemon: stopping")
	}
}

// snapshot counts the queue; loop only.
func (s *server) snapshot() Stats {
	st := Stats{Conns: len(s.conns)}
	for _, v := range s.core.Jobs() {
		state := StateWaiting
		switch {
		case !v.Phase.Holding():
		case v.Suspend == lockq.IsSuspended:
			state = StateFrozen
		default:
			state = StateRunning
		}
		if int(v.Mode.Kind) < len(ModeNames) {
			st.Requests[v.Mode.Kind][state]++
		}
	}
	return st
}

// nopObserver is the Observer when metrics are off.
type nopObserver struct{}

func (nopObserver) Granted(lockq.Kind, time.Duration)  {}
func (nopObserver) Busy(lockq.Kind)                    {}
func (nopObserver) TimedOut(lockq.Kind)                {}
func (nopObserver) Cancelled(lockq.Kind, string)       {}
func (nopObserver) Freezer(bool, time.Duration, error) {}
func (nopObserver) Exited(lockq.Kind, string)          {}

// parseMetricsAddr reads --metrics: unix:PATH, or a loopback HOST:PORT
// (localhost means 127.0.0.1). It returns what net.Listen takes.
func parseMetricsAddr(addr string) (network, address string, err error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if path == "" {
			return "", "", fmt.Errorf("%w: --metrics unix: needs a path, e.g. unix:/run/perflock/metrics.sock", ErrConfig)
		}
		return "unix", path, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", "", fmt.Errorf("%w: --metrics %q: want unix:PATH or a loopback HOST:PORT such as 127.0.0.1:9101", ErrConfig, addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return "", "", fmt.Errorf("%w: --metrics %q: port %q is not a number from 0 to 65535", ErrConfig, addr, port)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		if host == "" {
			host = "every interface"
		}
		return "", "", fmt.Errorf("%w: --metrics %q: %s is not a loopback address; perflockd serves metrics only on loopback (127.0.0.1, [::1], localhost) or a Unix socket (unix:PATH): put a reverse proxy in front to serve them further", ErrConfig, addr, host)
	}
	return "tcp", net.JoinHostPort(host, port), nil
}

// listenMetrics listens where parseMetricsAddr said. A Unix socket is made
// as the daemon's own (listen): in a directory checkSocketDir approves,
// never through a symlink, replacing a stale socket but not a live one.
func listenMetrics(network, address string, mode os.FileMode) (net.Listener, error) {
	if network == "tcp" {
		ln, err := net.Listen("tcp", address)
		if err != nil {
			return nil, fmt.Errorf("daemon: metrics: %w", err)
		}
		return ln, nil
	}
	if err := checkSocketDir(filepath.Dir(address)); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(address); err == nil && fi.Mode().Type() == os.ModeSocket {
		if c, err := net.DialTimeout("unix", address, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("daemon: metrics: another process serves %s", address)
		}
	}
	return listen(address, mode)
}
