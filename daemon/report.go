package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/perflock/perflock/cgroup"
	"github.com/perflock/perflock/proto"
)

// reportTimeout bounds the driver calls that find a job's cgroups for its
// run report.
const reportTimeout = 5 * time.Second

// cgroupDirPlacement is a Placement whose job has a cgroup directory of its
// own, which a run report reads.
type cgroupDirPlacement interface {
	CgroupDir(ctx context.Context) (string, error)
}

// sharedDirDriver is a Driver whose shared jobs all live under one cgroup
// directory, which a run report reads.
type sharedDirDriver interface {
	SharedCgroupDir(ctx context.Context) (string, error)
}

func (p cgroupPlacement) CgroupDir(context.Context) (string, error) { return p.j.Dir(), nil }

func (d *cgroupfsDriver) SharedCgroupDir(context.Context) (string, error) {
	return d.tree.SharedDir(), nil
}

// CgroupDir is, for an exclusive or group job, the cgroup of
// perflock-exclusive.slice rather than the scope's: systemd removes a
// scope's cgroup as soon as its last process exits, before the client
// sends done, while the slice stays and keeps the figures of the children
// it had. During an exclusive run the slice holds the job alone (a group
// job's figures are its group's).
func (p scopePlacement) CgroupDir(ctx context.Context) (string, error) {
	unit := p.name
	if strings.HasPrefix(p.name, "perflock-x-") {
		unit = ExclusiveSlice
	}
	return unitCgroupDir(ctx, p.conn.ControlGroup, unit)
}

func (d *systemdDriver) SharedCgroupDir(ctx context.Context) (string, error) {
	return unitCgroupDir(ctx, d.conn.ControlGroup, SharedSlice)
}

// unitCgroupDir is the directory of unit's cgroup under the cgroup2 mount.
func unitCgroupDir(ctx context.Context, controlGroup func(context.Context, string) (string, error), unit string) (string, error) {
	cg, err := controlGroup(ctx, unit)
	if err != nil {
		return "", err
	}
	if cg == "" {
		return "", fmt.Errorf("%s has no cgroup (not active)", unit)
	}
	mount, err := cgroup.Mountpoint()
	if err != nil {
		return "", err
	}
	return filepath.Join(mount, cg), nil
}

// runSample is what a run report reads at the start and at the end of a
// job. The directories, and the reasons when there are none, are found at
// the start and kept for the end.
type runSample struct {
	at        time.Time
	jobDir    string // "" when jobWhy says why
	jobWhy    string
	sharedDir string // "" when sharedWhy says why
	sharedWhy string

	machine    cgroup.MachineCPU
	machineErr error
	job        cgroup.CPUStat
	jobErr     error
	psi        cgroup.Pressure
	psiErr     error
	shared     cgroup.CPUStat
	sharedErr  error
}

// firstSample finds the job's cgroup and the shared side's, and reads them
// and the machine's CPU time. named: the job holds named locks only, so it
// has no cgroup and freezes nothing. It runs outside the loop.
func firstSample(ctx context.Context, drv Driver, p Placement, named bool) *runSample {
	ctx, cancel := context.WithTimeout(ctx, reportTimeout)
	defer cancel()
	r := &runSample{}
	switch c, ok := p.(cgroupDirPlacement); {
	case named:
		r.jobWhy = "a job without the cpu resource runs in no cgroup"
	case !ok:
		r.jobWhy = fmt.Sprintf("the %s driver runs jobs in no cgroup", drv.Name())
	default:
		var err error
		if r.jobDir, err = c.CgroupDir(ctx); err != nil {
			r.jobWhy = fmt.Sprintf("the job's cgroup: %v", err)
		}
	}
	switch d, ok := drv.(sharedDirDriver); {
	case named:
		r.sharedWhy = "a job without the cpu resource freezes no shared job"
	case !ok || !drv.CanFreeze():
		r.sharedWhy = fmt.Sprintf("the %s driver has no shared cgroup and cannot freeze", drv.Name())
	default:
		var err error
		if r.sharedDir, err = d.SharedCgroupDir(ctx); err != nil {
			r.sharedWhy = fmt.Sprintf("the shared jobs' cgroup: %v", err)
		}
	}
	r.read()
	return r
}

// next reads the same files again, for the end of the run.
func (r *runSample) next() *runSample {
	n := &runSample{jobDir: r.jobDir, jobWhy: r.jobWhy, sharedDir: r.sharedDir, sharedWhy: r.sharedWhy}
	n.read()
	return n
}

func (r *runSample) read() {
	if r.jobDir != "" {
		r.job, r.jobErr = cgroup.ReadCPUStat(r.jobDir)
		r.psi, r.psiErr = cgroup.ReadPressure(r.jobDir)
	}
	if r.sharedDir != "" {
		r.shared, r.sharedErr = cgroup.ReadCPUStat(r.sharedDir)
	}
	r.machine, r.machineErr = cgroup.ReadMachineCPU()
	r.at = time.Now()
}

// buildReport turns two samples into the figures of a run report. Nothing
// is guessed: a figure either side could not read is absent, with its
// reason in Unavailable.
func buildReport(start, end *runSample, job, driver, policy string, frozenJobs int) *proto.Report {
	rep := &proto.Report{Job: job, Driver: driver, Policy: policy, WallUS: us(end.at.Sub(start.at)), JobCgroup: start.jobDir}
	why := map[string]string{}

	var busy time.Duration
	if err := firstErr(start.machineErr, end.machineErr); err != nil {
		why["machine_busy_us"] = err.Error()
	} else {
		busy = max(end.machine.Busy-start.machine.Busy, 0)
		rep.MachineBusyUS = ptr(us(busy))
		rep.OnlineCPUs = end.machine.Online
	}

	jobErr := firstErr(start.jobErr, end.jobErr)
	switch {
	case start.jobDir == "":
		for _, k := range []string{"job_cpu", "pressure", "throttling"} {
			why[k] = start.jobWhy
		}
	case jobErr != nil:
		why["job_cpu"], why["throttling"] = jobErr.Error(), jobErr.Error()
	default:
		rep.JobCPU = &proto.ReportCPU{
			TotalUS:  us(end.job.CPU - start.job.CPU),
			UserUS:   us(end.job.User - start.job.User),
			SystemUS: us(end.job.System - start.job.System),
		}
		if start.job.Throttling && end.job.Throttling {
			rep.Throttling = &proto.ReportThrottling{
				NrThrottled: end.job.NrThrottled - min(start.job.NrThrottled, end.job.NrThrottled),
				ThrottledUS: us(end.job.Throttled - start.job.Throttled),
			}
		} else {
			why["throttling"] = "the cpu controller is not enabled for the job's cgroup (cpu.stat has no nr_throttled)"
		}
	}
	if start.jobDir != "" {
		if err := firstErr(start.psiErr, end.psiErr); err != nil {
			why["pressure"] = err.Error()
		} else {
			rep.Pressure = &proto.ReportPressure{SomeUS: us(end.psi.Some - start.psi.Some)}
			if start.psi.HasFull && end.psi.HasFull {
				rep.Pressure.FullUS = ptr(us(end.psi.Full - start.psi.Full))
			} else {
				why["pressure.full_us"] = "the kernel reports no \"full\" CPU pressure for cgroups (before Linux 5.13)"
			}
		}
	}

	switch {
	case rep.JobCPU == nil:
		why["outside"] = "needs the job's CPU time (job_cpu)"
	case rep.MachineBusyUS == nil:
		why["outside"] = "needs the machine's busy time (machine_busy_us)"
	default:
		// The machine's busy time has a tick's resolution per CPU: a
		// difference below zero is within it.
		out := max(busy-(end.job.CPU-start.job.CPU), 0)
		rep.Outside = &proto.ReportOutside{CPUUS: us(out)}
		if cap := time.Duration(rep.OnlineCPUs) * end.at.Sub(start.at); cap > 0 {
			rep.Outside.Share = float64(out) / float64(cap)
		}
	}

	switch {
	case start.sharedDir == "":
		why["shared"] = start.sharedWhy
	case firstErr(start.sharedErr, end.sharedErr) != nil:
		why["shared"] = firstErr(start.sharedErr, end.sharedErr).Error()
	default:
		used := max(end.shared.CPU-start.shared.CPU, 0)
		rep.Shared = &proto.ReportShared{FrozenJobs: frozenJobs, CPUUS: us(used), FrozenThroughout: used == 0}
	}
	if len(why) > 0 {
		rep.Unavailable = why
	}
	return rep
}

// firstErr is the first of two errors that is not nil.
func firstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func us(d time.Duration) int64 { return int64(d / time.Microsecond) }

func ptr[T any](v T) *T { return &v }
