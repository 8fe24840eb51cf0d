package daemon

import (
	"context"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/daemon/core"
	"github.com/perflock/perflock/lockq"
)

// A job's lease ends once no process of it is left. The drivers learn that
// from notifications that can lag: the kernel sends cgroup.events changes
// at most every 10 ms, and systemd marks a scope inactive only after its
// own. Most short jobs are one process, so the daemon also watches the job's
// first process by a pidfd: when it exits, the job's place is asked at once
// (Placement.Populated), and the next grant need not wait for the
// notification.

// openFirst opens a pidfd for a job's first process before it is placed
// (then still the client's unreaped child, or the client itself, so the
// pid names it); nil where it cannot (a kernel without pidfd_open).
func openFirst(pid int) *os.File {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil
	}
	// Non-blocking: the file parks its waits in the runtime's poller, not
	// in a thread of its own, and honours deadlines.
	return os.NewFile(uintptr(fd), "pidfd")
}

// waitExit reports, once the process of pidfd f has exited, true; false if
// ctx ends first or f cannot be waited on.
func waitExit(ctx context.Context, f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	stop := context.AfterFunc(ctx, func() { f.SetReadDeadline(time.Now()) })
	defer stop()
	exited := false
	err = rc.Read(func(fd uintptr) bool {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		exited = err == nil && n > 0
		return exited || (err != nil && err != unix.EINTR)
	})
	return err == nil && exited
}

// watchFirst steps Emptied as soon as a job's first process has exited
// and its place holds no process. It owns f.
func (s *server) watchFirst(ctx context.Context, t lockq.Ticket, p Placement, f *os.File) {
	s.goFn(func() {
		defer f.Close()
		if !waitExit(ctx, f) {
			return
		}
		if populated, err := p.Populated(ctx); err == nil && !populated {
			s.post(func() { s.step(core.Emptied{Ticket: t, Now: s.now()}) })
		}
	})
}
