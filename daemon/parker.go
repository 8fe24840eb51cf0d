package daemon

import (
	"context"
	"errors"
	"sync"

	"golang.org/x/sys/unix"
)

// A connection that waits for its turn, or whose job runs, sends nothing
// for a long time. Blocking a goroutine in a read for each would cost a
// goroutine stack per waiter (tens of MiB for 10,000 waiters); instead its
// reading goroutine parks it here and ends. One goroutine waits on an epoll
// set of every parked connection (level-triggered, one-shot) and starts a
// reading goroutine again for a connection that becomes readable: a
// message, or its end. The Go runtime's own poller keeps its registration
// of the descriptor; an epoll set of ours beside it is allowed.
type parker struct {
	s    *server
	ep   int // the epoll set
	wake int // an eventfd in the set: written when the daemon stops

	mu     sync.Mutex
	parked map[int32]parkedConn // by descriptor
	inSet  map[*conn]int32      // connections whose descriptor is in the set
	closed bool
}

// parkedConn is a parked connection and how its reading goes on.
type parkedConn struct {
	c      *conn
	resume func()
}

func newParker(s *server) (*parker, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(ep)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(ep)
		unix.Close(wake)
		return nil, err
	}
	return &parker{s: s, ep: ep, wake: wake, parked: map[int32]parkedConn{}, inSet: map[*conn]int32{}}, nil
}

// park registers c, whose reading goes on with resume once c is readable.
// It reports false when c cannot be parked (closed, or the daemon stops):
// the caller then goes on reading itself.
func (p *parker) park(c *conn, resume func()) bool {
	if p == nil {
		return false
	}
	var fd int32 = -1
	rc, err := c.nc.SyscallConn()
	if err != nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// Checked under p.mu: a connection being closed is either refused here
	// or found parked by its unpark.
	if p.closed || c.closing.Load() {
		return false
	}
	var ctlErr error
	err = rc.Control(func(s uintptr) {
		fd = int32(s)
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: fd}
		op := unix.EPOLL_CTL_ADD
		if got, ok := p.inSet[c]; ok && got == fd {
			op = unix.EPOLL_CTL_MOD // one-shot: disabled since it last fired
		}
		ctlErr = unix.EpollCtl(p.ep, op, int(fd), &ev)
	})
	if err != nil || ctlErr != nil {
		return false
	}
	p.inSet[c] = fd
	p.parked[fd] = parkedConn{c: c, resume: resume}
	return true
}

// unpark takes c out before its descriptor is closed (c.closing set), and
// goes on with its reading if it was parked (which then ends, as the
// connection is closed); it also forgets a connection whose reading ended.
// Closing a descriptor takes it out of the epoll set by itself, but then
// nothing would read c again and tell the loop it is gone.
func (p *parker) unpark(c *conn) {
	if p == nil {
		return
	}
	p.mu.Lock()
	fd, ok := p.inSet[c]
	delete(p.inSet, c)
	pc, parked := p.parked[fd]
	if parked && pc.c == c {
		delete(p.parked, fd)
	}
	closed := p.closed
	p.mu.Unlock()
	if ok && parked && pc.c == c && !closed {
		p.s.goFn(pc.resume)
	}
}

// run waits for parked connections to become readable until ctx ends. It
// owns the epoll set and the eventfd.
func (p *parker) run(ctx context.Context) {
	defer unix.Close(p.ep)
	defer unix.Close(p.wake)
	woken := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(woken)
		unix.Write(p.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	})
	defer func() { // before the eventfd is closed: no write into a reused descriptor
		if !stop() {
			<-woken
		}
	}()
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(p.ep, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			p.s.log.Error("waiting for parked connections failed; they are read by goroutines of their own from now on", "err", err)
			p.close(true)
			return
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == p.wake {
				p.close(false) // the daemon stops: it closes every connection itself
				return
			}
			p.mu.Lock()
			pc, ok := p.parked[ev.Fd]
			delete(p.parked, ev.Fd)
			p.mu.Unlock()
			if ok {
				p.s.goFn(pc.resume)
			}
		}
	}
}

// close parks nothing more; with resume, the parked connections are read
// by goroutines again.
func (p *parker) close(resume bool) {
	p.mu.Lock()
	p.closed = true
	left := p.parked
	p.parked, p.inSet = map[int32]parkedConn{}, map[*conn]int32{}
	p.mu.Unlock()
	if resume {
		for _, pc := range left {
			p.s.goFn(pc.resume)
		}
	}
}
