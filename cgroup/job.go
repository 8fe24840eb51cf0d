package cgroup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/cgroups/v3/cgroup2/stats"
	"golang.org/x/sys/unix"
)

// Job is the cgroup of one job, made by Tree.NewJob or found by Tree.Jobs. Its methods act on the
// cgroup's files, through a containerd/cgroups cgroup2.Manager where that does the job; none of
// them keeps a descriptor open between calls.
type Job struct {
	kind Kind
	id   uint64
	path string           // cgroup path, as /proc/PID/cgroup shows it
	dir  string           // directory in the file system
	m    *cgroup2.Manager // the library's handle on dir (it holds only the path)
}

// Kind returns whether the job is Exclusive or Shared.
func (j *Job) Kind() Kind { return j.kind }

// ID returns the job id the cgroup is named after.
func (j *Job) ID() uint64 { return j.id }

// Path returns the job's cgroup path relative to the mount, such as "/perflock/shared/s-43": the
// path that the "0::" line of /proc/PID/cgroup shows for its processes.
func (j *Job) Path() string { return j.path }

// Dir returns the job cgroup's directory in the file system.
func (j *Job) Dir() string { return j.dir }

// Add moves process pid, with all its threads, into the job. Children it forks afterwards are
// born in the job. It fails with an error wrapping unix.ESRCH if there is no such process.
func (j *Job) Add(pid int) error {
	p := filepath.Join(j.dir, procsFile)
	if pid < 0 {
		// AddProc takes a uint64; a negative pid is no process, as the kernel would say.
		return fmt.Errorf("cgroup: add pid %d to %s: %w", pid, p, unix.ESRCH)
	}
	if err := j.m.AddProc(uint64(pid)); err != nil {
		return fmt.Errorf("cgroup: add pid %d to %s: %w", pid, p, err)
	}
	return nil
}

// Pids returns the processes in the job now, in no particular order.
func (j *Job) Pids() ([]int, error) {
	procs, err := j.m.Procs(false)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, p := range procs {
		pids = append(pids, int(p))
	}
	return pids, nil
}

// Populated reports whether any process is in the job now (see
// [Populated]).
func (j *Job) Populated() (bool, error) { return Populated(j.dir) }

// Populated reports whether any process is in the cgroup at dir now
// ("populated 1" in its cgroup.events); a cgroup that no longer exists has
// none.
func Populated(dir string) (bool, error) {
	ev, err := readEvents(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return ev.Populated, err
}

// WaitEmpty returns nil once no process is left in the job ("populated 0" in cgroup.events),
// at once if that is so already, and also when the job cgroup no longer exists. It waits for the
// kernel's notification, without polling. If ctx ends first it returns ctx's error, wrapped.
func (j *Job) WaitEmpty(ctx context.Context) error { return WaitEmptyDir(ctx, j.dir) }

// WaitEmptyDir is WaitEmpty for the cgroup at dir, any cgroup2 directory (one a cluster
// scheduler made, say).
func WaitEmptyDir(ctx context.Context, dir string) error {
	err := waitEvents(ctx, dir, func(ev events) bool { return !ev.Populated })
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// Kill sends SIGKILL to every process in the job, including frozen ones, and returns without
// waiting for them to exit: follow it with WaitEmpty. It uses cgroup.kill (Linux 5.14), which
// also catches processes forked meanwhile; on older kernels it signals each pid in cgroup.procs
// until a pass finds no process it has not signalled yet. Killing a job whose cgroup is gone is
// not an error.
func (j *Job) Kill() error {
	// Manager.Kill writes cgroup.kill. Where that file is missing it falls back to freezing the
	// cgroup, signalling each pid once and then waiting for each process (wait4), which would
	// reap the daemon's own children and take their exit status from it; so it is called only
	// where cgroup.kill exists, and killEach does the rest.
	err := unix.Access(filepath.Join(j.dir, killFile), unix.F_OK)
	switch {
	case err == nil:
		err = j.m.Kill()
	case errors.Is(err, unix.ENOENT):
		return j.killEach() // no cgroup.kill, or no cgroup: killEach tells them apart
	}
	switch {
	case err == nil:
		return nil
	case j.gone():
		return nil
	default:
		return fmt.Errorf("cgroup: kill %s: %w", j.dir, err)
	}
}

// gone reports whether the job's cgroup directory no longer exists.
func (j *Job) gone() bool {
	_, err := os.Lstat(j.dir)
	return errors.Is(err, fs.ErrNotExist)
}

// killEach is Kill without cgroup.kill. A process that has received SIGKILL cannot fork, so once a
// pass over cgroup.procs finds only processes already signalled, no new one can appear. (A pid
// read from cgroup.procs could in principle exit and be reused before it is signalled.)
func (j *Job) killEach() error {
	signalled := make(map[int]bool)
	for {
		pids, err := ReadPids(j.dir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("cgroup: kill %s: %w", j.dir, err)
		}
		fresh := 0
		for _, pid := range pids {
			if signalled[pid] {
				continue
			}
			fresh++
			signalled[pid] = true
			if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("cgroup: kill pid %d in %s: %w", pid, j.dir, err)
			}
		}
		if fresh == 0 {
			return nil
		}
	}
}

// Remove deletes the job cgroup. It returns ErrJobBusy while processes remain (Kill, then
// WaitEmpty, first), and nil if the cgroup is already gone.
//
// It is one rmdir, not Manager.Delete: Delete fails on a cgroup that is gone, reports a busy one
// with an error that only its text identifies, and removes with os.RemoveAll, retried for
// 150ms, which on a busy cgroup also tries to unlink its interface files.
func (j *Job) Remove() error {
	err := unix.Rmdir(j.dir)
	switch {
	case err == nil || errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("%w: %s", ErrJobBusy, j.dir)
	default:
		return &fs.PathError{Op: "rmdir", Path: j.dir, Err: err}
	}
}

// Stat returns the CPU time used in the job so far (cpu.stat, present in every cgroup2 cgroup).
func (j *Job) Stat() (Stat, error) {
	m, err := j.m.StatFiltered(cgroup2.StatCPU)
	if err != nil {
		p := filepath.Join(j.dir, cpuStatFile)
		if errors.Is(err, cgroup2.ErrInvalidFormat) {
			return Stat{}, fmt.Errorf("%s: %w: %w", p, ErrInvalidFormat, err)
		}
		return Stat{}, fmt.Errorf("%s: %w", p, err)
	}
	if s, ok := statFromMetrics(m); ok {
		return s, nil
	}
	// The library reported nothing: it reads a missing cpu.stat (a removed job) as zeros, as it
	// would a new job's. The package's own parser tells the two apart, with the error of a
	// missing file.
	return j.readCPUStat()
}

// statFromMetrics converts the library's CPU metrics, reporting false when they hold no usage at
// all: no cpu.stat was read, or nothing has run in the job yet.
func statFromMetrics(m *stats.Metrics) (Stat, bool) {
	c := m.GetCPU()
	if c.GetUsageUsec() == 0 && c.GetUserUsec() == 0 && c.GetSystemUsec() == 0 {
		return Stat{}, false
	}
	us := func(v uint64) time.Duration { return time.Duration(v) * time.Microsecond }
	return Stat{CPU: us(c.GetUsageUsec()), User: us(c.GetUserUsec()), System: us(c.GetSystemUsec()), Throttled: us(c.GetThrottledUsec())}, true
}

// readCPUStat reads and parses the job's cpu.stat with the package's own parser.
func (j *Job) readCPUStat() (Stat, error) {
	s, err := ReadCPUStat(j.dir)
	return s.Stat, err
}
