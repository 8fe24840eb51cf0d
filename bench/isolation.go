package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/perflock/perflock/bench/internal/stats"
	"github.com/perflock/perflock/bench/internal/svg"
)

// hogs runs background CPU hogs until stopped.
type hogs struct {
	g    group
	stop chan struct{}
	wg   sync.WaitGroup
}

// startHogs starts n hogs. With loop set, each hog is a finite job
// (run with mk) restarted as soon as it ends, as a stream of background
// jobs is; else one endless process each.
func startHogs(n int, loop bool, mk func() []string, b *bench, ctx context.Context) (*hogs, error) {
	h := &hogs{stop: make(chan struct{})}
	for range n {
		if !loop {
			a := mk()
			if err := h.g.start(b.cmd(ctx, a[0], a[1:]...)); err != nil {
				h.halt()
				return nil, err
			}
			continue
		}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			for {
				select {
				case <-h.stop:
					return
				default:
				}
				a := mk()
				c := b.cmd(ctx, a[0], a[1:]...)
				c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
				if c.Start() != nil {
					return
				}
				done := make(chan struct{})
				go func() { c.Wait(); close(done) }()
				select {
				case <-done:
				case <-h.stop:
					c.Process.Signal(syscall.SIGTERM)
					select {
					case <-done:
					case <-time.After(15 * time.Second):
						syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
						<-done
					}
					return
				}
			}
		}()
	}
	return h, nil
}

func (h *hogs) halt() {
	close(h.stop)
	h.g.stop(syscall.SIGTERM)
	h.wg.Wait()
}

// isolation: a fixed CPU-bound workload alone and beside hogs.
func (b *bench) isolation(ctx context.Context) error {
	reps := 5
	if b.quick {
		reps = 2
	}
	nhogs := 2 * b.cores
	rate := spinRate(300 * time.Millisecond)
	target := 0.5 // seconds of work per thread when idle
	type workload struct {
		name    string
		threads int
		iters   int64
	}
	wls := []workload{
		{fmt.Sprintf("every core (%d threads)", b.cores), b.cores, int64(rate*target) * int64(b.cores)},
		{"1 thread", 1, int64(rate * target)},
	}
	hogCmd := func(extra ...string) func() []string {
		return func() []string { return append(extra, b.self, modeHog, "0") }
	}
	plsHogs := func(sock string) (*hogs, error) {
		return startHogs(nhogs, true, func() []string {
			return []string{"pls", "--socket", sock, "-q", "--", b.self, modeHog, "1s"}
		}, b, ctx)
	}
	type condition struct {
		name     string
		perflock bool
		start    func(sock string) (*hogs, error)
		policy   string // run the workload under perfrun on a daemon with this policy
	}
	conds := []condition{
		{"idle", false, nil, ""},
		{fmt.Sprintf("%d plain hogs", nhogs), false, func(string) (*hogs, error) { return startHogs(nhogs, false, hogCmd(), b, ctx) }, ""},
		{fmt.Sprintf("%d hogs under nice -n 19", nhogs), false, func(string) (*hogs, error) {
			return startHogs(nhogs, false, hogCmd("nice", "-n", "19"), b, ctx)
		}, ""},
		{fmt.Sprintf("%d pls hogs, drain; workload under perfrun", nhogs), true, plsHogs, "drain"},
		{fmt.Sprintf("%d pls hogs, freeze; workload under perfrun", nhogs), true, plsHogs, "freeze"},
	}
	type key struct{ w, c int }
	ratios := map[key][]float64{}
	secs := map[key][]float64{}
	waits := map[key][]float64{}
	for rep := range reps {
		for wi, wl := range wls {
			for ci, c := range conds {
				var h *hogs
				sock := ""
				if c.policy != "" {
					// Asked for each time: under systemd the one service
					// is reconfigured between policies.
					d, err := b.daemon(ctx, "", c.policy)
					if err != nil {
						return err
					}
					sock = d.sock
				}
				if c.start != nil {
					var err error
					if h, err = c.start(sock); err != nil {
						return fmt.Errorf("isolation %s: %w", c.name, err)
					}
					time.Sleep(400 * time.Millisecond) // the hogs are spinning
				}
				file := filepath.Join(b.dir, fmt.Sprintf("work-%d-%d-%d", rep, wi, ci))
				args := []string{b.self, modeWork, strconv.Itoa(wl.threads), strconv.FormatInt(wl.iters, 10), file}
				if sock != "" {
					args = append([]string{"perfrun", "--socket", sock, "-q", "--"}, args...)
				}
				wall, err := timed(b.cmd(ctx, args[0], args[1:]...))
				if h != nil {
					h.halt()
				}
				if err != nil {
					return fmt.Errorf("isolation %s: %w", c.name, err)
				}
				ns, err := readInt(file)
				if err != nil {
					return err
				}
				k := key{wi, ci}
				secs[k] = append(secs[k], float64(ns)/1e9)
				waits[k] = append(waits[k], wall.Seconds()-float64(ns)/1e9)
			}
		}
		progress("isolation rep %d/%d", rep+1, reps)
	}
	// Ratios to the idle median of the same workload.
	t := table{cols: []col{{"workload", false}, {"background", false}, {"time, median", true}, {"÷ idle: min", false}, {"median", false}, {"max", false}, {"CV", false}, {"wait before running, median", true}}}
	var bars []svg.Bar
	var dRatio float64
	for wi, wl := range wls {
		idle := stats.Median(secs[key{wi, 0}])
		for ci, c := range conds {
			k := key{wi, ci}
			for _, s := range secs[k] {
				ratios[k] = append(ratios[k], s/idle)
			}
			r := stats.Summarize(ratios[k])
			s := stats.Summarize(secs[k])
			wait := "–"
			if c.policy != "" {
				wait = fsec(stats.Median(waits[k]))
			}
			t.add(wl.name, c.name, fsec(s.Median), fx(r.Min), fx(r.Median), fx(r.Max), fmt.Sprintf("%.1f%%", 100*s.CV), wait)
			bars = append(bars, svg.Bar{Group: "workload: " + wl.name, Label: c.name, Value: r.Median, Lo: r.Min, Hi: r.Max, Accent: c.perflock})
			if wi == 0 && ci == 4 {
				dRatio = r.Median
			}
		}
	}
	img, err := b.report.chart("isolation", svg.Chart{
		Title:    "Isolation: a CPU-bound workload beside CPU hogs, as a multiple of its idle time",
		Subtitle: fmt.Sprintf("%d hogs on %d cores; median of %d, whiskers min–max", nhogs, b.cores, reps),
		Unit:     "× idle time (lower is better; 1 = undisturbed)", Bars: bars, Goal: 1.05, GoalLabel: "goal 1.05×",
	}, false)
	if err != nil {
		return err
	}
	why := ""
	if dRatio > 1.05 {
		why = "the workload's own time includes the moments before the freeze is confirmed; see Freeze latency."
	}
	b.report.goals = append(b.report.goals, goalLE("isolation (d)", "workload under perfrun, pls hogs frozen: ≤ 1.05× idle", dRatio, 1.05, fx, why))
	b.report.add(section{title: "5. Isolation", body: []string{
		fmt.Sprintf("A fixed amount of integer arithmetic (xorshift rounds, no memory traffic), calibrated to about %.1f s per thread when the machine is idle, "+
			"run by this bench program: once on every core (%d threads) and once on 1 thread. Its time is measured inside the process, from the first to the last round. "+
			"Background: %d CPU hogs (%d × cores), each spinning one CPU: as plain processes; under `nice -n 19`; as `pls` jobs under drain and under freeze, "+
			"with the workload under `perfrun`. The pls hogs are a stream of 1-second jobs restarted as they end (an endless job would never drain), so "+
			"under drain perfrun first waits for the running ones to finish (the last column). "+
			"%d repetitions, every workload and background interleaved; ratios are to the same workload's idle median.",
			target, b.cores, nhogs, 2, reps),
		b.report.markdown(t), img,
		"For pure CPU time the scheduler already protects well: under `nice -n 19` hogs get a weight of 15 against 1024. " +
			"What nice cannot touch is what the hogs do to the cores the workload is not using and to what those cores share " +
			"(caches, memory bandwidth, SMT siblings, turbo and thermal budget): the 1-thread workload leaves a core to the hogs, " +
			"which is where freezing them matters on a big machine. **This is a 2-vCPU VM: it mutes cache and memory-bandwidth effects** " +
			"(this workload touches no memory, and the two vCPUs share no cache we can see), so here nice looks nearly as good as freezing; " +
			"on a many-core host with memory-bound hogs it would not. The spread (min–max, CV) is part of the result: a benchmark needs repeatable times, not only a good mean.",
	}})
	return nil
}

func readInt(file string) (int64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}
