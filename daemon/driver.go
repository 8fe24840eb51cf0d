package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/cgroup"
)

// Driver is where jobs run: it places a job's first process, says when the
// job has no process left, and freezes the shared jobs as a whole. A Driver
// that is also an io.Closer is closed when the daemon stops.
type Driver interface {
	// Name is "systemd", "cgroupfs" or "none".
	Name() string
	// CanFreeze reports whether SetSharedFrozen works; without it the
	// daemon drains instead of freezing.
	CanFreeze() bool
	// Place puts pid, and so everything it starts, into a new place for job.
	Place(ctx context.Context, job JobSpec, pid int) (Placement, error)
	// SetSharedFrozen freezes (or thaws) every shared job and returns once
	// the kernel or service manager confirms it.
	SetSharedFrozen(ctx context.Context, frozen bool) error
}

// JobSpec is what a driver is told of a job.
type JobSpec struct {
	Ticket uint64
	Name   string // "x-42" (exclusive or group), "s-43" (shared)
	Shared bool
	User   string
	// Command is the job's argv, for descriptions.
	Command []string
	// MaxRuntime, when positive, is how long the job may run.
	MaxRuntime time.Duration
}

// Placement is one job's place.
type Placement interface {
	// Where is a cgroup path or unit name, "" if the driver has none.
	Where() string
	// WaitEmpty returns nil once no process of the job is left, or the
	// context's error.
	WaitEmpty(ctx context.Context) error
	// Remove deletes the place once it is empty.
	Remove() error
	// Stop ends the job: SIGTERM to every process, SIGKILL to what is left
	// after grace. It returns once the job is empty or ctx ends.
	Stop(ctx context.Context, grace time.Duration) error
}

// nativeMaxRuntime is a Placement whose driver stops the job at its
// MaxRuntime by itself (systemd's RuntimeMaxUSec).
type nativeMaxRuntime interface{ EnforcesMaxRuntime() bool }

// OpenDriver picks a driver by name: "systemd", "cgroupfs", "none", or
// "auto": systemd where it is the service manager and its bus answers,
// cgroupfs where a writable cgroup2 tree exists, none otherwise. cgroupName
// is the cgroupfs driver's subtree under the cgroup2 mount; th throttles
// shared jobs (systemd).
func OpenDriver(ctx context.Context, name, cgroupName string, th Throttle, log *slog.Logger) (Driver, error) {
	switch name {
	case "none":
		return noneDriver{}, nil
	case "systemd":
		return openSystemd(ctx, th)
	case "cgroupfs":
		return openCgroupfs(cgroupName)
	case "auto", "":
		if systemdBooted() {
			d, err := openSystemd(ctx, th)
			if err == nil {
				return d, nil
			}
			log.Warn("systemd driver unavailable, trying cgroupfs", "reason", err)
		}
		d, err := openCgroupfs(cgroupName)
		if err != nil {
			log.Info("cgroupfs driver unavailable, using none", "reason", err)
			return noneDriver{}, nil
		}
		return d, nil
	}
	return nil, fmt.Errorf("%w: unknown driver %q (want auto, systemd, cgroupfs or none)", ErrConfig, name)
}

// noneDriver runs jobs as plain processes: the lease is the connection,
// which the job inherits.
type noneDriver struct{}

func (noneDriver) Name() string    { return "none" }
func (noneDriver) CanFreeze() bool { return false }
func (noneDriver) Place(_ context.Context, _ JobSpec, pid int) (Placement, error) {
	return nonePlacement{pid: pid}, nil
}
func (noneDriver) SetSharedFrozen(context.Context, bool) error {
	return errors.New("daemon: the none driver cannot freeze")
}

// nonePlacement knows only the job's first process.
type nonePlacement struct{ pid int }

func (nonePlacement) Where() string                   { return "" }
func (nonePlacement) WaitEmpty(context.Context) error { return nil }
func (nonePlacement) Remove() error                   { return nil }

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

// cgroupfsDriver places jobs in perflock's own cgroup2 subtree.
type cgroupfsDriver struct {
	tree  *cgroup.Tree
	claim io.Closer // this daemon's flock on the subtree
}

func openCgroupfs(name string) (Driver, error) {
	mount, err := cgroup.Mountpoint()
	if err != nil {
		return nil, fmt.Errorf("cgroupfs driver: %w", err)
	}
	t, err := cgroup.Open(mount, name)
	if err != nil {
		return nil, fmt.Errorf("cgroupfs driver: %w", err)
	}
	claim, err := claimDir(t.Dir())
	if err != nil {
		return nil, fmt.Errorf("cgroupfs driver: %w (the cgroup subtree %s: give this one another --cgroup-name)", err, t.Path())
	}
	return &cgroupfsDriver{tree: t, claim: claim}, nil
}

// Close lets go of the subtree; the jobs keep running.
func (d *cgroupfsDriver) Close() error { return d.claim.Close() }

func (d *cgroupfsDriver) Name() string    { return "cgroupfs" }
func (d *cgroupfsDriver) CanFreeze() bool { return true }

func (d *cgroupfsDriver) Place(ctx context.Context, job JobSpec, pid int) (Placement, error) {
	kind := cgroup.Exclusive
	if job.Shared {
		kind = cgroup.Shared
	}
	j, err := d.tree.NewJob(kind, job.Ticket)
	if err != nil {
		return nil, err
	}
	if err := j.Add(pid); err != nil {
		_ = j.Remove()
		return nil, err
	}
	return cgroupPlacement{j}, nil
}

func (d *cgroupfsDriver) SetSharedFrozen(ctx context.Context, frozen bool) error {
	if frozen {
		return d.tree.FreezeShared(ctx)
	}
	return d.tree.ThawShared(ctx)
}

type cgroupPlacement struct{ j *cgroup.Job }

func (p cgroupPlacement) Where() string                       { return p.j.Path() }
func (p cgroupPlacement) WaitEmpty(ctx context.Context) error { return p.j.WaitEmpty(ctx) }
func (p cgroupPlacement) Remove() error                       { return p.j.Remove() }

// Stop sends SIGTERM to every process of the job, then kills the cgroup.
func (p cgroupPlacement) Stop(ctx context.Context, grace time.Duration) error {
	pids, err := p.j.Pids()
	if err != nil {
		return err
	}
	for _, pid := range pids {
		unix.Kill(pid, unix.SIGTERM)
	}
	wctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	if p.j.WaitEmpty(wctx) == nil {
		return nil
	}
	if err := p.j.Kill(); err != nil {
		return err
	}
	return p.j.WaitEmpty(ctx)
}
