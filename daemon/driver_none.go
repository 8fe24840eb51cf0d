package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/shield"
)

// noneDriver runs jobs as plain processes: the lease is the connection,
// which the job inherits. It cannot freeze, and it has no cgroups.
type noneDriver struct{}

var (
	errNoneFreeze = errors.New("daemon: the none driver cannot freeze")
	errNoCgroup   = errors.New("the none driver runs jobs in no cgroup")
	errNoShared   = errors.New("the none driver has no shared cgroup and cannot freeze")
)

func (noneDriver) Name() string    { return "none" }
func (noneDriver) CanFreeze() bool { return false }
func (noneDriver) Place(_ context.Context, _ JobSpec, pid int) (Placement, error) {
	return nonePlacement{pid: pid}, nil
}
func (noneDriver) SetSharedFrozen(context.Context, bool) error     { return errNoneFreeze }
func (noneDriver) Adopt(context.Context) ([]Adopted, error)        { return nil, nil }
func (noneDriver) SharedCgroupDir(context.Context) (string, error) { return "", errNoShared }
func (noneDriver) JobOf(string) (uint64, bool)                     { return 0, false }
func (noneDriver) ShieldBackend() shield.Backend                   { return nil }
func (noneDriver) Close() error                                    { return nil }
func (nonePlacement) CgroupDir(context.Context) (string, error)    { return "", errNoCgroup }
func (nonePlacement) EnforcesMaxRuntime() bool                     { return false }
func (nonePlacement) Where() string                                { return "" }
func (nonePlacement) WaitEmpty(context.Context) error              { return nil }
func (nonePlacement) Remove() error                                { return nil }
func (nonePlacement) Populated(context.Context) (bool, error)      { return false, nil }

// nonePlacement knows only the job's first process.
type nonePlacement struct{ pid int }

// Stop signals the job's first process, watching it through a pidfd.
func (p nonePlacement) Stop(ctx context.Context, grace time.Duration) error {
	fd, err := unix.PidfdOpen(p.pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("daemon: stop pid %d: %w", p.pid, err)
	}
	defer unix.Close(fd)
	unix.PidfdSendSignal(fd, unix.SIGTERM, nil, 0)
	if pidfdExited(ctx, fd, grace) {
		return nil
	}
	unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
	pidfdExited(ctx, fd, grace)
	return nil
}

// pidfdExited waits up to d (or until ctx ends) for the process to exit.
func pidfdExited(ctx context.Context, fd int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for ctx.Err() == nil {
		ms := int(time.Until(deadline) / time.Millisecond)
		if ms <= 0 {
			return false
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, min(ms, 100))
		if err == nil && n > 0 {
			return true
		}
	}
	return false
}
