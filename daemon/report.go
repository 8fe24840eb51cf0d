package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/perflock/perflock/cgroup"
	"github.com/perflock/perflock/daemon/core"
	"github.com/perflock/perflock/internal/cpuset"
	"github.com/perflock/perflock/proto"
)

// reportTimeout bounds the driver calls that find a job's cgroups for its
// run report.
const reportTimeout = 5 * time.Second

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
	if named {
		r.jobWhy = "a job without the cpu resource runs in no cgroup"
		r.sharedWhy = "a job without the cpu resource freezes no shared job"
	} else {
		r.jobDir, r.jobWhy = cgroupWhy(p.CgroupDir(ctx))("the job's cgroup")
		r.sharedDir, r.sharedWhy = cgroupWhy(drv.SharedCgroupDir(ctx))("the shared jobs' cgroup")
	}
	r.read()
	return r
}

// cgroupWhy is a cgroup directory, or why there is none: a driver without
// cgroups says so itself; a failure is named for what failed.
func cgroupWhy(dir string, err error) func(what string) (string, string) {
	return func(what string) (string, string) {
		switch {
		case err == nil:
			return dir, ""
		case errors.Is(err, errNoCgroup) || errors.Is(err, errNoShared):
			return "", err.Error()
		}
		return "", fmt.Sprintf("%s: %v", what, err)
	}
}

// sendReport answers done with the job's run report. The files are read
// outside the loop; the connection stays open (and so the job's cgroup)
// until the client has read the report and closed it.
func (s *server) sendReport(e core.SendReport) {
	c := s.conns[e.Conn]
	if c == nil {
		return
	}
	driver, policy := s.drv.Name(), s.core.Policy().String()
	var start *runSample
	if pl := s.places[e.Ticket]; pl != nil {
		start = pl.start
	}
	if start == nil {
		c.send(proto.Msg{Type: proto.TReport, Figures: &proto.Report{Job: e.Job, Driver: driver, Policy: policy,
			Unavailable: map[string]string{"all": "the job was never placed"}}})
		return
	}
	sh := shieldRun{cpus: s.cfg.Shield, on: e.Shielded, why: e.NoShield}
	if s.shieldWhy != "" {
		sh.why = s.shieldWhy
	}
	s.goFn(func() {
		rep := buildReport(start, start.next(), e.Job, driver, policy, e.FrozenJobs)
		reportShield(rep, start, start.next(), sh)
		c.send(proto.Msg{Type: proto.TReport, Figures: rep})
	})
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
	busy := reportMachine(rep, why, start, end)
	reportJob(rep, why, start, end)
	reportPressure(rep, why, start, end)
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

// shieldRun is what a run report says of the shield: its housekeeping
// CPUs ("": none configured), whether the job ran under it, or why not.
type shieldRun struct {
	cpus string
	on   bool
	why  string
}

// reportShield splits the CPU time used outside the job by where it ran:
// on the job's CPUs (all but the housekeeping ones) and on the
// housekeeping CPUs. The job's own time cannot be split by CPU, so the
// time outside it on the job's CPUs is at least their busy time less all
// of the job's.
func reportShield(rep *proto.Report, start, end *runSample, sh shieldRun) {
	why := func(w string) {
		if rep.Unavailable == nil {
			rep.Unavailable = map[string]string{}
		}
		rep.Unavailable["shield"] = w
	}
	hk, err := cpuset.Parse(sh.cpus)
	switch {
	case sh.cpus == "":
		why("no shield: perflockd runs without one (perflockd --shield CPUS)")
		return
	case !sh.on:
		why("no shield: " + sh.why)
		return
	case err != nil || rep.Outside == nil || rep.JobCPU == nil:
		why("the split needs the machine's and the job's CPU time")
		return
	}
	var other time.Duration
	for cpu, busy := range end.machine.PerCPU {
		if hk.Contains(cpu) {
			continue
		}
		other += max(busy-start.machine.PerCPU[cpu], 0)
	}
	onJob := max(other-time.Duration(rep.JobCPU.TotalUS)*time.Microsecond, 0)
	outside := time.Duration(rep.Outside.CPUUS) * time.Microsecond
	rep.Shield = &proto.ReportShield{HousekeepingCPUs: sh.cpus, OutsideOnJobCPUsUS: us(min(onJob, outside)),
		OutsideOnHousekeepingUS: us(max(outside-onJob, 0))}
}

// reportMachine fills in the machine's busy time, and returns it.
func reportMachine(rep *proto.Report, why map[string]string, start, end *runSample) time.Duration {
	if err := firstErr(start.machineErr, end.machineErr); err != nil {
		why["machine_busy_us"] = err.Error()
		return 0
	}
	busy := max(end.machine.Busy-start.machine.Busy, 0)
	rep.MachineBusyUS = ptr(us(busy))
	rep.OnlineCPUs = end.machine.Online
	return busy
}

// reportJob fills in the job's CPU time and throttling.
func reportJob(rep *proto.Report, why map[string]string, start, end *runSample) {
	jobErr := firstErr(start.jobErr, end.jobErr)
	switch {
	case start.jobDir == "":
		for _, k := range []string{"job_cpu", "pressure", "throttling"} {
			why[k] = start.jobWhy
		}
		return
	case jobErr != nil:
		why["job_cpu"], why["throttling"] = jobErr.Error(), jobErr.Error()
		return
	}
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

// reportPressure fills in the job's CPU pressure.
func reportPressure(rep *proto.Report, why map[string]string, start, end *runSample) {
	if start.jobDir == "" {
		return
	}
	if err := firstErr(start.psiErr, end.psiErr); err != nil {
		why["pressure"] = err.Error()
		return
	}
	rep.Pressure = &proto.ReportPressure{SomeUS: us(end.psi.Some - start.psi.Some)}
	if start.psi.HasFull && end.psi.HasFull {
		rep.Pressure.FullUS = ptr(us(end.psi.Full - start.psi.Full))
	} else {
		why["pressure.full_us"] = "the kernel reports no \"full\" CPU pressure for cgroups (before Linux 5.13)"
	}
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
