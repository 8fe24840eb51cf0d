// Package metrics is perflockd's Prometheus metrics (perflockd --metrics):
// counters and histograms the daemon's loop updates as events happen, the
// queue's state read through the loop at scrape time, and the HTTP server
// that answers scrapes. README.md lists the metrics.
//
// Only the perflockd program links this package: the client programs
// (perfrun, pls, wholock) do not pay for Prometheus's package
// initialisation.
package metrics

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/perflock/perflock/daemon"
	"github.com/perflock/perflock/lockq"
)

// The HTTP server's bounds: a slow or stalled scraper holds one of
// maxConns connections until these run out, and never the daemon's loop.
const (
	maxConns          = 16
	maxInFlight       = 4
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	handlerTimeout    = 10 * time.Second
	writeTimeout      = 15 * time.Second
	idleTimeout       = 30 * time.Second
	shutdownGrace     = time.Second
)

// waitBuckets suit waits from 1 ms to an hour; freezerBuckets a freeze or
// thaw, from well under a millisecond to the daemon's 30 s bound.
var (
	waitBuckets    = []float64{.001, .005, .01, .05, .1, .5, 1, 5, 15, 60, 300, 900, 1800, 3600}
	freezerBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
)

var (
	modes   = []lockq.Kind{lockq.Exclusive, lockq.Shared, lockq.Group}
	reasons = []string{daemon.CancelClient, daemon.CancelUser, daemon.CancelReplace, daemon.CancelExpire}
	results = []string{daemon.ResultSuccess, daemon.ResultFailure, daemon.ResultSignal, daemon.ResultUnknown}
	ops     = []string{"freeze", "thaw"}
)

// Metrics is a daemon.Metrics on a registry of its own.
type Metrics struct {
	reg *prometheus.Registry
	log *slog.Logger

	grants, busy, timeouts [len(daemon.ModeNames)]prometheus.Counter
	wait                   [len(daemon.ModeNames)]prometheus.Observer
	cancels, exits         *prometheus.CounterVec
	freezes, thaws         prometheus.Counter
	freezerFailures        *prometheus.CounterVec
	freezerSeconds         *prometheus.HistogramVec
}

// New makes the metrics; nothing is served until Serve.
func New(log *slog.Logger) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), log: log}
	grants := counters(m.reg, "perflock_grants_total", "Requests granted, by mode.", "mode")
	busy := counters(m.reg, "perflock_busy_refusals_total", "Nonblocking requests (perfrun -n) refused because the lock was busy, by mode.", "mode")
	timeouts := counters(m.reg, "perflock_timeouts_total", "Requests whose timeout (perfrun -t) passed while they waited, by mode.", "mode")
	wait := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "perflock_wait_seconds",
		Help:    "Time from a request's acquire (or its rejoin after a restart) to its grant, by mode.",
		Buckets: waitBuckets,
	}, []string{"mode"})
	m.reg.MustRegister(wait)
	for _, k := range modes {
		mode := daemon.ModeNames[k]
		m.grants[k] = grants.WithLabelValues(mode)
		m.busy[k] = busy.WithLabelValues(mode)
		m.timeouts[k] = timeouts.WithLabelValues(mode)
		m.wait[k] = wait.WithLabelValues(mode)
	}
	m.cancels = counters(m.reg, "perflock_cancellations_total",
		"Requests taken out of line or running jobs stopped, by mode and reason: client (its client hung up while waiting), cancel (wholock --cancel), replace (--replace), expire (--expire-after).",
		"mode", "reason")
	m.exits = counters(m.reg, "perflock_job_exits_total",
		"Leases ended, by mode and result: success (the client reported status 0), failure (1-127), signal (128 and above), unknown (no status: the client was gone).",
		"mode", "result")
	for _, k := range modes {
		for _, r := range reasons {
			m.cancels.WithLabelValues(daemon.ModeNames[k], r)
		}
		for _, r := range results {
			m.exits.WithLabelValues(daemon.ModeNames[k], r)
		}
	}
	m.freezes = prometheus.NewCounter(prometheus.CounterOpts{Name: "perflock_freezes_total", Help: "Times the shared jobs were frozen (confirmed)."})
	m.thaws = prometheus.NewCounter(prometheus.CounterOpts{Name: "perflock_thaws_total", Help: "Times the shared jobs were thawed (confirmed)."})
	m.reg.MustRegister(m.freezes, m.thaws)
	m.freezerFailures = counters(m.reg, "perflock_freezer_failures_total", "Freezes or thaws of the shared jobs that failed, by op.", "op")
	m.freezerSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "perflock_freezer_duration_seconds",
		Help:    "Duration of the driver's freeze or thaw call, successful or not, by op.",
		Buckets: freezerBuckets,
	}, []string{"op"})
	m.reg.MustRegister(m.freezerSeconds)
	for _, op := range ops {
		m.freezerFailures.WithLabelValues(op)
		m.freezerSeconds.WithLabelValues(op)
	}
	m.reg.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
		buildInfo(),
	)
	return m
}

// counters registers a counter vector.
func counters(reg prometheus.Registerer, name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	reg.MustRegister(c)
	return c
}

// buildInfo is perflock_build_info{version, revision, goversion} 1.
func buildInfo() prometheus.Collector {
	version, revision := "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		version = bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "perflock_build_info",
		Help:        "Always 1; the labels say which perflock this is.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
}

func op(freeze bool) string {
	if freeze {
		return "freeze"
	}
	return "thaw"
}

// Granted implements daemon.Observer.
func (m *Metrics) Granted(k lockq.Kind, waited time.Duration) {
	if int(k) < len(m.grants) && m.grants[k] != nil {
		m.grants[k].Inc()
		m.wait[k].Observe(waited.Seconds())
	}
}

// Busy implements daemon.Observer.
func (m *Metrics) Busy(k lockq.Kind) {
	if int(k) < len(m.busy) && m.busy[k] != nil {
		m.busy[k].Inc()
	}
}

// TimedOut implements daemon.Observer.
func (m *Metrics) TimedOut(k lockq.Kind) {
	if int(k) < len(m.timeouts) && m.timeouts[k] != nil {
		m.timeouts[k].Inc()
	}
}

// Cancelled implements daemon.Observer.
func (m *Metrics) Cancelled(k lockq.Kind, reason string) {
	if int(k) < len(daemon.ModeNames) {
		m.cancels.WithLabelValues(daemon.ModeNames[k], reason).Inc()
	}
}

// Exited implements daemon.Observer.
func (m *Metrics) Exited(k lockq.Kind, result string) {
	if int(k) < len(daemon.ModeNames) {
		m.exits.WithLabelValues(daemon.ModeNames[k], result).Inc()
	}
}

// Freezer implements daemon.Observer.
func (m *Metrics) Freezer(freeze bool, took time.Duration, err error) {
	m.freezerSeconds.WithLabelValues(op(freeze)).Observe(took.Seconds())
	switch {
	case err != nil:
		m.freezerFailures.WithLabelValues(op(freeze)).Inc()
	case freeze:
		m.freezes.Inc()
	default:
		m.thaws.Inc()
	}
}

// Serve implements daemon.Metrics: it answers GET /metrics on ln until ctx
// ends. The queue's state comes from stats at each scrape.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener, info daemon.Info, stats func(context.Context) (daemon.Stats, error)) error {
	di := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "perflock_daemon_info",
		Help:        "Always 1; the labels are the daemon's driver and its policy (freeze falls back to drain where the driver cannot freeze).",
		ConstLabels: prometheus.Labels{"driver": info.Driver, "policy": info.Policy},
	})
	di.Set(1)
	if err := m.reg.Register(di); err != nil {
		return err
	}
	if err := m.reg.Register(&queueCollector{ctx: ctx, stats: stats}); err != nil {
		return err
	}
	errLog := slog.NewLogLogger(m.log.Handler(), slog.LevelWarn)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:            errLog,
		MaxRequestsInFlight: maxInFlight,
		Timeout:             handlerTimeout,
	}))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          errLog,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(limit(ln, maxConns)) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if srv.Shutdown(sctx) != nil {
		srv.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// queueCollector reads the queue through the daemon's loop at each scrape.
type queueCollector struct {
	ctx   context.Context // the server's: a stopping daemon answers no more
	stats func(context.Context) (daemon.Stats, error)
}

var (
	queueDesc = prometheus.NewDesc("perflock_queue_length",
		"Requests in the queue, by mode and state: waiting; running (holding: granted, placed, or being frozen); frozen (holding, the freeze confirmed).",
		[]string{"mode", "state"}, nil)
	connsDesc = prometheus.NewDesc("perflock_connections_open", "Open client connections.", nil, nil)
)

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDesc
	ch <- connsDesc
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.stats(c.ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(queueDesc, err)
		return
	}
	for _, k := range modes {
		for state, name := range daemon.StateNames {
			ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(st.Requests[k][state]), daemon.ModeNames[k], name)
		}
	}
	ch <- prometheus.MustNewConstMetric(connsDesc, prometheus.GaugeValue, float64(st.Conns))
}

// limit lets a listener hold at most n connections at once; more wait in
// the kernel's backlog.
func limit(ln net.Listener, n int) net.Listener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
