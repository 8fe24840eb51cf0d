package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// processPlacement is the place of a job adopted by its first process, from
// its record: one without a cgroup (named locks, the none driver), whose
// lease after a restart lasts as long as that process. It holds a pidfd,
// so that the pid cannot be reused under it.
type processPlacement struct {
	pid int
	fd  int
}

// adoptProcess opens the job's first process, if it still runs: the same
// pid with the same start time.
func adoptProcess(pid int, start uint64) (*processPlacement, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("daemon: pid %d: %w", pid, err)
	}
	// Checked after the pidfd is open: from now on the pid is this one.
	if got, err := procStart(pid); err != nil || got != start {
		unix.Close(fd)
		return nil, fmt.Errorf("daemon: pid %d is another process now (start %d, want %d): %v", pid, got, start, err)
	}
	return &processPlacement{pid: pid, fd: fd}, nil
}

func (p *processPlacement) Where() string                             { return "" }
func (p *processPlacement) EnforcesMaxRuntime() bool                  { return false }
func (p *processPlacement) CgroupDir(context.Context) (string, error) { return "", errNoCgroup }

// WaitEmpty returns once the process has exited.
func (p *processPlacement) WaitEmpty(ctx context.Context) error {
	for {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}, 100)
		if err == nil && n > 0 {
			return nil
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("daemon: watch pid %d: %w", p.pid, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// Populated: the process has not exited.
func (p *processPlacement) Populated(context.Context) (bool, error) {
	n, err := unix.Poll([]unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}, 0)
	if err != nil {
		return true, fmt.Errorf("daemon: watch pid %d: %w", p.pid, err)
	}
	return n == 0, nil
}

// Remove lets go of the pidfd.
func (p *processPlacement) Remove() error { return unix.Close(p.fd) }

// Stop signals the process: SIGTERM, then SIGKILL after grace.
func (p *processPlacement) Stop(ctx context.Context, grace time.Duration) error {
	unix.PidfdSendSignal(p.fd, unix.SIGTERM, nil, 0)
	if pidfdExited(ctx, p.fd, grace) {
		return nil
	}
	unix.PidfdSendSignal(p.fd, unix.SIGKILL, nil, 0)
	pidfdExited(ctx, p.fd, grace)
	return nil
}

// procStart is a process's start time, in clock ticks since boot (field
// 22 of /proc/PID/stat): with the pid, it names one process for good.
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("%s/%d/stat", procRoot, pid))
	if err != nil {
		return 0, err
	}
	// The command, field 2, is in parentheses and may hold anything.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("pid %d: malformed stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("pid %d: malformed stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64) // field 22: the third is f[0]
}
