package runner

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/perflock/perflock/proto"
)

// Report formats of Options.Report.
const (
	ReportText = "text"
	ReportJSON = "json"
)

// reportWait bounds how long the client waits for the run report once the
// job has exited.
var reportWait = 5 * time.Second

// awaitReport waits, bounded, for the daemon's run report after done. It
// returns the report, or why there is none.
func (j *job) awaitReport(msgs <-chan received) (*proto.Report, string) {
	t := time.NewTimer(reportWait)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return nil, fmt.Sprintf("perflockd sent none within %v (an older perflockd?)", reportWait)
		case sig := <-j.sigs:
			return nil, fmt.Sprintf("interrupted by %v while waiting for it", sig)
		case r := <-msgs:
			if r.err != nil {
				return nil, "lost the connection to perflockd: " + connErr(r.err)
			}
			switch r.msg.Type {
			case proto.TReport:
				return r.msg.Figures, ""
			case proto.TError:
				return nil, fmt.Sprintf("perflockd: %s: %s", r.msg.Code, printable(r.msg.Message))
			}
		}
	}
}

// emitReport writes the report, or says why there is none, to the report
// file or stderr. A failure is only a message: the exit status stays the
// job's.
func (j *job) emitReport(rep *proto.Report, why string) {
	if rep == nil {
		j.say("run report unavailable: %s", why)
		return
	}
	var out string
	if j.o.Report == ReportJSON {
		b, err := json.Marshal(rep)
		if err != nil {
			j.say("run report: %v", err)
			return
		}
		out = string(b) + "\n"
	} else {
		out = FormatReport(j.o.Program, rep)
	}
	if j.o.ReportFile != "" {
		if err := os.WriteFile(j.o.ReportFile, []byte(out), 0o644); err != nil {
			j.say("cannot write the run report: %v", err)
		}
		return
	}
	j.clearLine()
	fmt.Fprint(j.o.Stderr, out)
}

// FormatReport is a run report for people: a heading line, then one
// aligned line per figure, saying why where a figure is not available.
func FormatReport(program string, r *proto.Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: report for %s (driver %s, policy %s)\n", program, printable(r.Job), printable(r.Driver), printable(r.Policy))
	line := func(name, format string, a ...any) {
		fmt.Fprintf(&b, "  %-17s %s\n", name, fmt.Sprintf(format, a...))
	}
	na := func(name string, keys ...string) {
		for _, k := range append(keys, "all") {
			if why, ok := r.Unavailable[k]; ok {
				line(name, "not available: %s", printable(why))
				return
			}
		}
		line(name, "not available")
	}
	wall := time.Duration(r.WallUS) * time.Microsecond
	line("wall time", "%s", seconds(r.WallUS))
	if r.JobCPU != nil {
		line("job CPU", "%s (user %s, system %s)", seconds(r.JobCPU.TotalUS), seconds(r.JobCPU.UserUS), seconds(r.JobCPU.SystemUS))
	} else {
		na("job CPU", "job_cpu")
	}
	if r.Outside != nil {
		line("outside the job", "%s CPU, %.1f%% of %d CPUs × %s", seconds(r.Outside.CPUUS), 100*r.Outside.Share, r.OnlineCPUs, seconds(r.WallUS))
	} else {
		na("outside the job", "outside")
	}
	if r.MachineBusyUS != nil {
		share := 0.0
		if c := time.Duration(r.OnlineCPUs) * wall; c > 0 {
			share = 100 * float64(time.Duration(*r.MachineBusyUS)*time.Microsecond) / float64(c)
		}
		line("machine busy", "%s CPU, %.1f%% of %d CPUs × %s", seconds(*r.MachineBusyUS), share, r.OnlineCPUs, seconds(r.WallUS))
	} else {
		na("machine busy", "machine_busy_us")
	}
	if p := r.Pressure; p != nil {
		full := "full not available"
		if p.FullUS != nil {
			full = "full " + seconds(*p.FullUS)
		}
		line("CPU pressure", "some %s, %s", seconds(p.SomeUS), full)
	} else {
		na("CPU pressure", "pressure")
	}
	if t := r.Throttling; t != nil {
		line("throttling", "%d periods, %s", t.NrThrottled, seconds(t.ThrottledUS))
	} else {
		na("throttling", "throttling")
	}
	if s := r.Shield; s != nil {
		line("shield", "other work on CPUs %s; outside the job: %s on the job's CPUs, %s on housekeeping",
			printable(s.HousekeepingCPUs), seconds(s.OutsideOnJobCPUsUS), seconds(s.OutsideOnHousekeepingUS))
	} else if _, ok := r.Unavailable["shield"]; ok {
		na("shield", "shield")
	}
	if s := r.Shared; s != nil {
		verdict := "stayed frozen throughout"
		if s.FrozenJobs == 0 {
			verdict = "none ran"
		}
		if !s.FrozenThroughout {
			verdict = "NOT frozen throughout (thawed by hand, or a failed freeze)"
		}
		line("shared jobs", "%d frozen at the start; %s CPU during the run: %s", s.FrozenJobs, seconds(s.CPUUS), verdict)
	} else {
		na("shared jobs", "shared")
	}
	return b.String()
}

// seconds is a time in microseconds as seconds, to the millisecond.
func seconds(us int64) string {
	return fmt.Sprintf("%.3fs", float64(us)/1e6)
}
