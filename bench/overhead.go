package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/perflock/perflock/bench/internal/stats"
	"github.com/perflock/perflock/bench/internal/svg"
)

// overhead: whole-process wall time of a no-op job under each lock.
func (b *bench) overhead(ctx context.Context) error {
	runs := 30
	if b.quick {
		runs = 8
	}
	d, err := b.daemon(ctx, "", "freeze")
	if err != nil {
		return err
	}
	lock := filepath.Join(b.dir, "overhead.lock")
	type variant struct {
		name     string
		perflock bool
		args     func() []string
	}
	vs := []variant{
		{"`true`", false, func() []string { return []string{"true"} }},
		{"`flock FILE true`", false, func() []string { return []string{"flock", lock, "true"} }},
		{"`perfrun -- true`", true, func() []string { return []string{"perfrun", "--socket", d.sock, "-q", "--", "true"} }},
		{"`pls -- true`", true, func() []string { return []string{"pls", "--socket", d.sock, "-q", "--", "true"} }},
		// The client's own start, with no daemon to talk to: what is left
		// of perfrun's cost besides it is the conversation and the place.
		{"`perfrun --version`", false, func() []string { return []string{"perfrun", "--version"} }},
	}
	if b.driver == "cgroupfs" {
		dn, err := b.daemon(ctx, "none", "freeze")
		if err != nil {
			return err
		}
		vs = append(vs, variant{"`perfrun -- true`, none driver", true, func() []string {
			return []string{"perfrun", "--socket", dn.sock, "-q", "--", "true"}
		}})
	}
	times := map[string][]float64{}
	for i := -2; i < runs; i++ { // two warm-up rounds
		for _, v := range vs {
			a := v.args()
			w, err := timed(b.cmd(ctx, a[0], a[1:]...))
			if err != nil {
				return fmt.Errorf("overhead: %w", err)
			}
			if i >= 0 {
				times[v.name] = append(times[v.name], w.Seconds())
			}
		}
		if i >= 0 && (i+1)%10 == 0 {
			progress("overhead %d/%d rounds", i+1, runs)
		}
	}
	flockMed := stats.Median(times[vs[1].name])
	t := table{cols: []col{{"command", false}, {"median", true}, {"p90", true}, {"min", true}, {"median ÷ flock", false}, {"p90 ÷ flock p90", false}}}
	var bars []svg.Bar
	flockP90 := stats.Percentile(times[vs[1].name], 90)
	for _, v := range vs {
		s := stats.Summarize(times[v.name])
		t.add(v.name, fms(s.Median), fms(s.P90), fms(s.Min), fx(s.Median/flockMed), fx(s.P90/flockP90))
		bars = append(bars, svg.Bar{Label: strings.ReplaceAll(v.name, "`", ""), Value: s.Median / flockMed, Lo: s.Min / flockMed, Hi: s.P90 / flockMed, Accent: v.perflock, Text: fx(s.Median/flockMed) + " (" + fms(s.Median) + ")"})
	}
	img, err := b.report.chart("overhead", svg.Chart{
		Title:    "Overhead: wall time of a no-op job, as a multiple of flock FILE true",
		Subtitle: fmt.Sprintf("median of %d runs each, interleaved; whiskers min–p90; daemon already running", runs),
		Unit:     "× flock FILE true (lower is better)", Bars: bars, Goal: 1.5, GoalLabel: "goal 1.5×",
	}, false)
	if err != nil {
		return err
	}
	pr := stats.Median(times[vs[2].name]) / flockMed
	why := ""
	if pr > 1.5 {
		why = b.overheadWhy(times, vs[2].name, flockMed)
	}
	b.report.goals = append(b.report.goals, goalLE("overhead", "`perfrun -- true` ≤ 1.5× `flock FILE true`", pr, 1.5, func(r float64) string {
		return fx(r) + " (" + fms(pr*flockMed) + " vs " + fms(flockMed) + ")"
	}, why))
	b.report.add(section{title: "2. Overhead", body: []string{
		fmt.Sprintf("Whole-process wall time, from fork to wait, of a job that does nothing, with the daemon already running: %d runs of each, the commands interleaved round by round (two warm-up rounds first).", runs),
		b.report.markdown(t), img,
		"perfrun and pls are Go programs that exec the job in place: each run pays one Go runtime start (the `perfrun --version` row: " +
			"the client starting and exiting, no daemon), a connection, one write of hello and request, one read of the daemon's hello and grant, " +
			"and the wait for placed while the daemon places the client itself (cgroupfs: the job's cgroup made and the client moved into it); " +
			"then the exec. The next job is granted once the job's process has exited and its cgroup is empty (a pidfd, then cgroup.events read at once). " +
			"flock(1) is a small C program and one flock(2) call.",
	}})
	return nil
}

func (b *bench) overheadWhy(times map[string][]float64, name string, flockMed float64) string {
	med := func(n string) float64 { return stats.Median(times[n]) }
	job, start, tru := med(name), med("`perfrun --version`"), med("`true`")
	msg := fmt.Sprintf("perfrun costs %s more than flock(1) per job. Its own start, measured alone (`perfrun --version`, a static Go program "+
		"that parses its flags and exits), is %s; with the exec of `true` (%s) that is already %s of flock(1)'s %s: a Go runtime starts "+
		"slower than flock(1)'s C. The other %s is the conversation with the daemon, one round trip since the request goes with the hello "+
		"and the client is placed on grant, and the daemon's own work on it (the connection, the grant, the job's record, the place)",
		fms(job-flockMed), fms(start), fms(tru), fx((start+tru)/flockMed), fms(flockMed), fms(job-start-tru))
	if none, ok := times["`perfrun -- true`, none driver"]; ok {
		msg += fmt.Sprintf("; with no cgroup (none driver) a job takes %s, so about %s of it is the job's cgroup (made, the client moved in, "+
			"seen empty, removed; within the noise when the cgroup2 tree has favordynmods)", fms(med("`perfrun -- true`, none driver")), fms(job-stats.Median(none)))
	}
	return msg + "."
}

// handoff: many no-op exclusive jobs from concurrent clients.
func (b *bench) handoff(ctx context.Context) error {
	jobs, clients, reps := 1000, 8, 2
	if b.quick {
		jobs, reps = 200, 1
	}
	d, err := b.daemon(ctx, "", "freeze")
	if err != nil {
		return err
	}
	peers := []peer{b.perflockPeer("perflock ("+b.driver+")", d)}
	if b.driver == "cgroupfs" {
		dn, err := b.daemon(ctx, "none", "freeze")
		if err != nil {
			return err
		}
		peers = append(peers, b.perflockPeer("perflock (none driver)", dn))
	}
	peers = append(peers, b.flockPeer())
	plain := peer{name: "no lock (spawn ceiling)", exclusive: func(ctx context.Context, args ...string) *exec.Cmd {
		return b.cmd(ctx, args[0], args[1:]...)
	}}
	peers = append(peers, plain)

	type result struct {
		rate     []float64
		gaps     []float64
		overlaps int
	}
	res := map[string]*result{}
	for rep := range reps {
		for _, p := range peers {
			file := filepath.Join(b.dir, fmt.Sprintf("handoff-%d-%d", rep, len(res)))
			os.Remove(file)
			var next atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, clients)
			t0 := time.Now()
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(jobs) {
						if _, err := timed(p.exclusive(ctx, b.self, modeStamp, file)); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			wall := time.Since(t0)
			close(errs)
			if err := <-errs; err != nil {
				return fmt.Errorf("handoff %s: %w", p.name, err)
			}
			r := res[p.name]
			if r == nil {
				r = &result{}
				res[p.name] = r
			}
			gaps, overlaps, err := readGaps(file)
			if err != nil {
				return err
			}
			if len(gaps)+1 != jobs {
				return fmt.Errorf("handoff %s: %d stamps, want %d", p.name, len(gaps)+1, jobs)
			}
			r.rate = append(r.rate, float64(jobs)/wall.Seconds())
			r.gaps = append(r.gaps, gaps...)
			r.overlaps += overlaps
			progress("handoff rep %d/%d %-24s %d jobs in %v (%.0f jobs/s)", rep+1, reps, p.name, jobs, wall.Round(time.Millisecond), float64(jobs)/wall.Seconds())
		}
	}
	flockRate := stats.Median(res["flock(1)"].rate)
	t := table{cols: []col{{"peer", false}, {"jobs/s (median)", true}, {"÷ flock(1)", false}, {"end→next start, median", true}, {"p99", true}, {"p99 ÷ flock p99", false}, {"overlapping jobs", false}}}
	flockP99 := stats.Percentile(res["flock(1)"].gaps, 99)
	var bars []svg.Bar
	for _, p := range peers {
		r := res[p.name]
		rate := stats.Median(r.rate)
		if p.name == plain.name {
			t.add(p.name, fmt.Sprintf("%.0f", rate), fx(rate/flockRate), "–", "–", "–", fmt.Sprint(r.overlaps)+" (no lock)")
		} else {
			t.add(p.name, fmt.Sprintf("%.0f", rate), fx(rate/flockRate), fms(stats.Median(r.gaps)), fms(stats.Percentile(r.gaps, 99)),
				fx(stats.Percentile(r.gaps, 99)/flockP99), fmt.Sprint(r.overlaps))
		}
		bars = append(bars, svg.Bar{Label: p.name, Value: rate / flockRate, Accent: p.perflock, Text: fx(rate/flockRate) + fmt.Sprintf(" (%.0f/s)", rate)})
	}
	img, err := b.report.chart("handoff", svg.Chart{
		Title:    fmt.Sprintf("Handoff: %d exclusive no-op jobs from %d concurrent clients", jobs, clients),
		Subtitle: fmt.Sprintf("throughput as a multiple of flock(1)'s in the same run; median of %d", reps),
		Unit:     "× flock(1) jobs/s (higher is better)", Bars: bars, Goal: 1, GoalLabel: "flock(1)",
	}, false)
	if err != nil {
		return err
	}
	pr := stats.Median(res[peers[0].name].rate) / flockRate
	why := ""
	if pr < 1 {
		why = "each handoff goes through the daemon: the job's end seen by a pidfd and its cgroup read, the next request granted and its client " +
			"placed (on grant, with no message from it), then that client wakes to read granted and placed and execs; on 2 cores 8 clients " +
			"compete with the daemon for CPU. flock(1) hands the lock over inside the kernel and the waiter execs at once. The none-driver row shows the part the cgroup costs; the end→next-start delay shows the handoff itself."
	}
	b.report.goals = append(b.report.goals, goal{name: "handoff", target: "jobs/s ≥ flock(1)",
		measured: fx(pr) + fmt.Sprintf(" (%.0f vs %.0f jobs/s)", pr*flockRate, flockRate),
		verdict:  map[bool]string{true: "**met**", false: "**missed**"}[pr >= 1], why: why})
	b.report.add(section{title: "3. Handoff", body: []string{
		fmt.Sprintf("%d exclusive jobs from %d concurrent clients, each client running its jobs one after another: "+
			"`perfrun -- bench __stamp FILE` and `flock -x F bench __stamp FILE`. The job is this bench program re-executed: it appends "+
			"its CLOCK_MONOTONIC start and end to a file; the delay is the next job's start minus the previous job's end, in start order, "+
			"and includes the next job's exec and Go runtime start (the same for every peer). An overlap (a job starting before the previous one ended) would be a broken lock: the column must read 0. "+
			"%d repetitions, peers interleaved; the last row runs the same jobs with no lock at all, the machine's spawn ceiling.", jobs, clients, reps),
		b.report.markdown(t), img,
	}})
	return nil
}

// readGaps reads "START END" stamps and returns, in start order, each
// job's start minus the previous job's end (seconds), and how many jobs
// started before the previous one ended.
func readGaps(file string) ([]float64, int, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, 0, err
	}
	type span struct{ s, e int64 }
	var spans []span
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, 0, fmt.Errorf("%s: bad stamp line %q", file, line)
		}
		s, err1 := strconv.ParseInt(f[0], 10, 64)
		e, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, 0, fmt.Errorf("%s: bad stamp line %q", file, line)
		}
		spans = append(spans, span{s, e})
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.s, b.s) })
	var gaps []float64
	overlaps := 0
	for i := 1; i < len(spans); i++ {
		g := spans[i].s - spans[i-1].e
		if g < 0 {
			overlaps++
		}
		gaps = append(gaps, float64(g)/1e9)
	}
	return gaps, overlaps, nil
}
