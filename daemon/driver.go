package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/perflock/perflock/shield"
)

// Driver is where jobs run: it places a job's first process, says when the
// job has no process left, freezes the shared jobs as a whole, finds the
// jobs an earlier daemon placed, and names the cgroups a run report reads.
// Each driver is whole in a file of its own: driver_none.go,
// driver_cgroupfs.go, driver_systemd.go.
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
	// Adopt lists the jobs an earlier daemon placed that still run (their
	// names, x-N and s-N, carry mode and ticket) and removes empty
	// leftovers.
	Adopt(ctx context.Context) ([]Adopted, error)
	// JobOf is the ticket of the job whose place holds a process of cgroup
	// (its cgroup2 path, as /proc/PID/cgroup reads "0::PATH"), if any.
	JobOf(cgroup string) (uint64, bool)
	// SharedCgroupDir is the cgroup directory all shared jobs live under,
	// which a run report reads; an error says why there is none.
	SharedCgroupDir(ctx context.Context) (string, error)
	// ShieldBackend is where a shield confines the machine's other work:
	// the driver's units or cgroups; nil for a driver with neither.
	ShieldBackend() shield.Backend
	// Close lets go of the driver's resources; the jobs keep running.
	Close() error
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
	// Populated says whether a process of the job is left now: asked when
	// the job's first process has exited, so that the lease can end before
	// the slower notification WaitEmpty waits for.
	Populated(ctx context.Context) (bool, error)
	// Remove deletes the place once it is empty.
	Remove() error
	// Stop ends the job: SIGTERM to every process, SIGKILL to what is left
	// after grace. It returns once the job is empty or ctx ends.
	Stop(ctx context.Context, grace time.Duration) error
	// CgroupDir is the cgroup directory whose figures are the job's, for
	// its run report; an error says why there is none.
	CgroupDir(ctx context.Context) (string, error)
	// EnforcesMaxRuntime: the driver stops the job at its MaxRuntime by
	// itself (systemd's RuntimeMaxUSec).
	EnforcesMaxRuntime() bool
}

// Adopted is a job a restarted daemon finds still running.
type Adopted struct {
	Ticket    uint64
	Shared    bool
	Placement Placement
	PIDs      []int
}

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
