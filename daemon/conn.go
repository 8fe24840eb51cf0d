package daemon

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/daemon/core"
	"github.com/perflock/perflock/governor"
	"github.com/perflock/perflock/internal/jobname"
	"github.com/perflock/perflock/lockq"
	"github.com/perflock/perflock/proto"
)

var pidSelf = os.Getpid()

// conn is one client connection. Its reader and writer goroutines belong to
// the server; watch is loop-owned.
type conn struct {
	s    *server
	id   core.ConnID
	nc   *net.UnixConn
	cred *unix.Ucred
	// start is the client's start time (procStart; 0 if unknown), read
	// when its request comes, by the goroutine that reads its place: with
	// cred.Pid it names the client, which may ask to be placed itself.
	start uint64

	watch *watcher // loop-owned: set for a watching connection
	// closing is set before the connection is closed: it is not parked
	// from then on (see parker).
	closing atomic.Bool

	mu          sync.Mutex
	outbox      []proto.Msg
	closeAfter  bool // close once the outbox is written
	dead        bool
	writing     bool // a writer goroutine runs; started on demand
	watching    bool // a watcher: no write deadline; the loop hears when all is written
	stopOnClose func() bool
}

func newConn(s *server, id core.ConnID, nc *net.UnixConn, cred *unix.Ucred) *conn {
	c := &conn{s: s, id: id, nc: nc, cred: cred}
	c.stopOnClose = context.AfterFunc(s.ctx, func() { nc.Close() })
	return c
}

// read runs the conversation's reading side: handshake and request here,
// everything that touches shared state through the loop.
func (c *conn) read() {
	c.s.post(func() { c.s.conns[c.id] = c }) // first: whatever it posts next finds it
	if !c.converse() {
		c.end()
	}
}

// end closes the connection once its reading is over and tells the loop.
func (c *conn) end() {
	c.stopOnClose()
	c.kill()
	c.s.post(func() { c.s.closed(c) })
}

// converse reads the conversation; it reports whether the connection was
// parked (its reading goes on later, in another goroutine) rather than
// over.
func (c *conn) converse() (parked bool) {
	r := proto.NewReader(c.nc)
	m, ok := c.handshake(r)
	if !ok {
		return false
	}
	switch m.Type {
	case proto.TCancel:
		c.cancelRequest(m)
	case proto.TList:
		c.s.post(func() { c.finishAll(c.s.list()) })
		c.drain()
	case proto.TWatch:
		// No read deadline: the client closing ends the watch.
		c.nc.SetReadDeadline(time.Time{})
		c.s.post(func() { c.s.startWatching(c) })
		if m, err := r.Read(); err == nil {
			c.fail(proto.CodeInvalid, "unexpected %s message: a watch ends when the client closes", m.Type)
			c.drain()
		} else {
			c.readFailed(err)
		}
	case proto.TAcquire:
		if c.acquire(m) {
			return c.session(r, false)
		}
	default:
		c.fail(proto.CodeInvalid, "expected acquire, list, watch or cancel, got %s", m.Type)
		c.drain()
	}
	return false
}

// handshake answers the client's hello and reads its request.
func (c *conn) handshake(r *proto.Reader) (proto.Msg, bool) {
	c.nc.SetReadDeadline(time.Now().Add(handshakeTimeout))
	m, err := r.Read()
	if err != nil {
		c.readFailed(err)
		return m, false
	}
	if m.Type != proto.THello {
		c.fail(proto.CodeInvalid, "expected hello, got %s", m.Type)
		c.drain()
		return m, false
	}
	if m.Version != proto.Version {
		c.fail(proto.CodeVersion, "perflockd speaks protocol version %d, the client %d: use matching versions of perflock", proto.Version, m.Version)
		c.drain()
		return m, false
	}
	c.send(proto.Msg{Type: proto.THello, Version: proto.Version, PID: pidSelf, Driver: c.s.drv.Name(), Policy: c.s.core.Policy().String(), InPlace: true, PlaceSelf: true, BindLeases: true})
	c.nc.SetReadDeadline(time.Now().Add(handshakeTimeout))
	if m, err = r.Read(); err != nil {
		c.readFailed(err)
		return m, false
	}
	return m, true
}

// session reads what a client with a request sends after it: place, done.
// Whenever nothing is left to read it parks the connection (see parker)
// and reports true; resumed (readable again), it reads before it parks.
func (c *conn) session(r *proto.Reader, resumed bool) (parked bool) {
	s := c.s
	for ; ; resumed = false {
		if !resumed && r.Buffered() == 0 {
			r.Idle() // before parking: then another goroutine may read
			if s.parker.park(c, func() { c.resume(r) }) {
				return true
			}
		}
		m, err := r.Read()
		if err != nil {
			c.readFailed(err)
			return false
		}
		switch m.Type {
		case proto.TPlace:
			// The client cannot fake its pid or uid (SO_PEERCRED) nor its
			// start time (read when it asked), and its unreaped child
			// cannot be replaced by another process.
			if err := checkChild(m.PID, int(c.cred.Pid), c.start, c.cred.Uid); err != nil {
				s.log.Warn("place refused", "pid", m.PID, "client", c.cred.Pid, "err", err)
				c.fail(proto.CodeDenied, "%v", err)
				c.drain()
				return false
			}
			s.post(func() { s.step(core.Place{Conn: c.id, PID: m.PID, Now: s.now()}) })
		case proto.TDone:
			s.post(func() { s.step(core.Done{Conn: c.id, Status: m.Status, Now: s.now()}) })
		default:
			c.fail(proto.CodeInvalid, "unexpected %s message", m.Type)
			c.drain()
			return false
		}
	}
}

// resume goes on reading a parked connection's session.
func (c *conn) resume(r *proto.Reader) {
	if !c.session(r, true) {
		c.end()
	}
}

// acquire checks what can be checked before the request is queued (its
// governor, its rejoin token) and hands it to the core.
func (c *conn) acquire(m proto.Msg) bool {
	s := c.s
	gov, code, err := s.checkGovernor(m)
	if err != nil {
		s.log.Info("refused", "pid", c.cred.Pid, "uid", c.cred.Uid, "governor", m.Governor, "reason", err)
		c.fail(code, "%v", err)
		c.drain()
		return false
	}
	if m.Bind != "" && !s.mayBind(c.cred.Uid) {
		s.log.Warn("refused: bind by a user who may not", "pid", c.cred.Pid, "uid", c.cred.Uid, "bind", m.Bind)
		c.fail(proto.CodeDenied, "only root or a user perflockd --bind-users names may bind a lease to a cgroup (uid %d may not)", c.cred.Uid)
		c.drain()
		return false
	}
	if m.Bind != "" && s.cgroup2 == "" {
		c.fail(proto.CodeUnavailable, "this machine has no cgroup2 hierarchy: perflockd cannot watch the cgroup %s, so it cannot bind a lease to it", m.Bind)
		c.drain()
		return false
	}
	if m.Ticket != 0 && !s.state.canRejoin(lockq.Ticket(m.Ticket), c.cred.Uid, m.Token) {
		s.log.Warn("rejoin refused (a token not of this ticket and user): queued as a new request", "ticket", m.Ticket, "uid", c.cred.Uid, "pid", c.cred.Pid)
		m.Ticket = 0
	}
	c.start, _ = procStart(int(c.cred.Pid))
	a := core.Acquire{
		Conn: c.id, UID: c.cred.Uid, PID: int(c.cred.Pid), PIDStart: c.start, Mode: m.Mode, Resources: m.Resources,
		Preemptible: m.Preemptible, Nonblock: m.Nonblock, Timeout: msDuration(m.TimeoutMS),
		MaxRuntime: msDuration(m.MaxRuntimeMS), Command: m.Command, Key: m.Key,
		IfElapsed: msDuration(m.IfElapsedMS), Replace: m.Replace, ExpireAfter: msDuration(m.ExpireAfterMS),
		Report: m.Report, Rejoin: lockq.Ticket(m.Ticket), PlaceSelf: m.PlaceSelf,
		Bind: m.Bind, BindGrace: msDuration(m.BindGraceMS), Owner: m.Owner,
	}
	if gov != governor.None {
		a.Governor = gov.String()
	}
	a.Within = c.within(m.Within)
	c.nc.SetReadDeadline(time.Time{})
	s.post(func() {
		a.User, a.Now = s.userName(a.UID), s.now()
		if a.Key != "" && s.history != nil {
			if t, ok := s.history.lastSuccess(a.UID, a.Key); ok {
				a.LastSuccess = core.Time(t.UnixNano())
			}
		}
		s.step(a)
	})
	return true
}

// within is the job the client runs in: the one whose place holds it, or
// the one it names (PERFLOCK_JOB).
func (c *conn) within(named string) lockq.Ticket {
	if cg, err := procCgroup(int(c.cred.Pid)); err == nil {
		if t, ok := c.s.drv.JobOf(cg); ok {
			return lockq.Ticket(t)
		}
	}
	if _, t, ok := jobname.Parse(named); ok {
		return lockq.Ticket(t)
	}
	return 0
}

// msDuration is a protocol's milliseconds as a Duration, saturated: a
// client's huge value means "very long", never a negative wrap.
func msDuration(ms int64) core.Duration {
	if ms <= 0 {
		return 0
	}
	if ms > math.MaxInt64/int64(core.Millisecond) {
		return core.Duration(math.MaxInt64)
	}
	return core.Duration(ms) * core.Millisecond
}

// cancelRequest is wholock --cancel, by ticket or by job name.
func (c *conn) cancelRequest(m proto.Msg) {
	s := c.s
	t := lockq.Ticket(m.Ticket)
	if m.Job != "" {
		_, n, ok := jobname.Parse(m.Job)
		if !ok {
			c.fail(proto.CodeInvalid, "no job %q: want a job name like x-42 or a ticket number", m.Job)
			c.drain()
			return
		}
		t = lockq.Ticket(n)
	}
	s.post(func() {
		s.step(core.Cancel{Conn: c.id, UID: c.cred.Uid, User: s.userName(c.cred.Uid), Ticket: t, Now: s.now()})
	})
	c.drain()
}

// readFailed answers a broken message with an error; a closed or timed-out
// connection just ends.
func (c *conn) readFailed(err error) {
	switch {
	case errors.Is(err, proto.ErrMalformed) || errors.Is(err, proto.ErrTooLong):
		c.s.log.Warn("bad message", "pid", c.cred.Pid, "uid", c.cred.Uid, "err", err)
		c.fail(proto.CodeInvalid, "%v", err)
		c.drain()
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.s.log.Warn("client sent no request in time", "pid", c.cred.Pid, "uid", c.cred.Uid, "timeout", handshakeTimeout.String())
		c.fail(proto.CodeInvalid, "no hello or request within %v", handshakeTimeout)
		c.drain()
	}
}

// drain waits for the writer to flush the final messages, bounded: by
// handshakeTimeout once nothing is left to write, and while the writer
// writes, by its own deadlines (a long listing to a slow reader takes as
// long as it takes).
func (c *conn) drain() {
	left := int64(proto.MaxMessage)
	for left > 0 {
		c.nc.SetReadDeadline(time.Now().Add(handshakeTimeout))
		n, err := io.Copy(io.Discard, io.LimitReader(c.nc, left))
		left -= n
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
		c.mu.Lock()
		writing := c.writing && !c.dead
		c.mu.Unlock()
		if !writing {
			return
		}
	}
}
