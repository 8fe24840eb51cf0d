package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/perflock/perflock/bench/internal/stats"
	"github.com/perflock/perflock/bench/internal/svg"
)

// isoConfig is the isolation scenario's setup, from the bench's flags.
type isoConfig struct {
	workloads     []string      // names from isoWorkloadNames, in order
	backgrounds   []string      // names from isoBackgroundNames, in order
	reps          int           // repetitions; 0: 5 (2 with -quick)
	hogs          int           // hogs beside every workload; 0: one per CPU the workload leaves, at least 1
	streamThreads int           // threads of the bandwidth-bound workload; 0: a quarter of the CPUs, at least 1
	streamMiB     int           // MiB each of its threads streams over; 0: 4 × the L3 in all, at least 64 each
	hogMiB        int           // MiB each hog streams over; 0: 2 × the L3 over one hog per CPU but one, at least 32 each
	chaseMiB      int           // MiB of the cache-bound workload's pointer chase
	target        time.Duration // a workload's time alone, about
	shield        string        // perflockd --shield CPUS for the shield background
}

// Names the flags take, in the order the page shows them.
var (
	isoWorkloadNames   = []string{"arith", "stream", "chase"}
	isoBackgroundNames = []string{"idle", "perfrun", "plain", "nice", "sched-idle", "pls-freeze", "pls-drain", "shield"}
	// isoDefaultBackgrounds leaves out pls-drain: a drained hog is gone, not
	// isolated, and the stream of finite jobs it needs costs a minute.
	isoDefaultBackgrounds = []string{"idle", "perfrun", "plain", "nice", "sched-idle", "pls-freeze", "shield"}
)

// pickNames parses a comma-separated list of names from known ("" : def).
func pickNames(flag, list string, known, def []string) ([]string, error) {
	if strings.TrimSpace(list) == "" {
		return def, nil
	}
	var out []string
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if n == "all" {
			return known, nil
		}
		if !slices.Contains(known, n) {
			return nil, fmt.Errorf("-%s: unknown %q (want some of %s, or all)", flag, n, strings.Join(known, ","))
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	// In the page's order, whatever the flag's.
	slices.SortFunc(out, func(a, b string) int { return slices.Index(known, a) - slices.Index(known, b) })
	return out, nil
}

// hogs runs background hogs until halted.
type hogs struct {
	g      group
	stop   chan struct{}
	wg     sync.WaitGroup
	ready  net.Listener  // hogs dial it when they run (envReady)
	readyC chan struct{} // a token per hog that said so
}

// startHogs starts n hogs, the commands mk makes. With loop set, each hog
// is a finite job restarted as soon as it ends, as a stream of background
// jobs is; else one endless process each. Every hog gets envReady in its
// environment; waitReady waits for them.
func (b *bench) startHogs(ctx context.Context, n int, loop bool, mk func() []string) (*hogs, error) {
	b.mu.Lock()
	b.hogSets++
	path := filepath.Join(b.dir, fmt.Sprintf("ready-%d.sock", b.hogSets))
	b.mu.Unlock()
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	h := &hogs{stop: make(chan struct{}), ready: ln, readyC: make(chan struct{}, n)}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			select {
			case h.readyC <- struct{}{}:
			default: // a later hog of a loop
			}
		}
	}()
	cmd := func() *exec.Cmd {
		a := mk()
		c := b.cmd(ctx, a[0], a[1:]...)
		c.Env = append(c.Env, envReady+"="+path)
		return c
	}
	for range n {
		if !loop {
			if err := h.g.start(cmd()); err != nil {
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
				c := cmd()
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

// waitReady waits until n hogs have said that they run.
func (h *hogs) waitReady(ctx context.Context, n int) error {
	limit := time.After(60 * time.Second)
	for i := range n {
		select {
		case <-h.readyC:
		case <-ctx.Done():
			return ctx.Err()
		case <-limit:
			h.g.mu.Lock()
			defer h.g.mu.Unlock()
			return fmt.Errorf("only %d of %d hogs running after a minute: %v", i, n, errors.Join(h.g.errs...))
		}
	}
	return nil
}

func (h *hogs) halt() {
	close(h.stop)
	h.ready.Close()
	h.g.stop(syscall.SIGTERM)
	h.wg.Wait()
}

// isoWorkload is a workload of the isolation scenario.
type isoWorkload struct {
	key, name string
	threads   int
	args      func(file string) []string // the helper's command line, calibrated
	alone     string                     // its pace alone, from the calibration, for the page
}

// isoBackground is what runs beside the workload.
type isoBackground struct {
	key, name string
	short     string    // the chart's label
	perflock  bool      // the workload runs under perfrun on this daemon
	daemon    daemonKey // when perflock
	loop      bool      // hogs are finite jobs, restarted
	hogs      bool      // hogs run beside the workload
	hog       []string  // the hog's command before the bench's own (nice, pls …)
	sched     string    // the hog's scheduling: normal or idle
	hogFor    string    // a hog's duration (0: until stopped)
	about     string    // for the page
	accent    bool      // perflock's own: drawn in the accent colour
}

// isoVerdict is one workload beside one background, for a goal: the median
// ratio to alone, the spread (max − min, in ratios) and alone's; or why it
// was not measured.
type isoVerdict struct {
	ratio, spread, idleSpread float64
	why                       string
}

// isoSizes resolves the memory sizes of cfg for this machine and says how.
func (b *bench) isoSizes(cfg *isoConfig) string {
	l3, level := cacheInfo()
	note := fmt.Sprintf("the largest CPU cache here is an L%d of %d MiB (sysfs)", level, l3)
	if l3 == 0 {
		l3 = 32
		note = "the CPU cache size is unknown here (no sysfs cache entries): 32 MiB assumed"
	}
	if cfg.streamThreads <= 0 {
		cfg.streamThreads = max(1, b.cores/4)
	}
	if cfg.streamMiB <= 0 {
		cfg.streamMiB = max(64, (4*l3+cfg.streamThreads-1)/cfg.streamThreads)
	}
	if cfg.hogMiB <= 0 {
		cfg.hogMiB = max(32, (2*l3+max(1, b.cores-1)-1)/max(1, b.cores-1))
	}
	if cfg.chaseMiB <= 0 {
		cfg.chaseMiB = 16
	}
	hogs := cfg.hogs
	if hogs <= 0 {
		hogs = max(1, b.cores-1)
	}
	need := cfg.streamThreads*cfg.streamMiB + hogs*cfg.hogMiB
	if avail := memAvailableMiB(); avail > 0 && need > avail/2 {
		f := float64(avail/2) / float64(need)
		cfg.streamMiB = max(8, int(float64(cfg.streamMiB)*f))
		cfg.hogMiB = max(8, int(float64(cfg.hogMiB)*f))
		note += fmt.Sprintf("; the buffers were shrunk to fit half of the %d MiB of memory available", avail)
	}
	return note
}

// calibrate runs the helper three times with argv (its last word the
// result file) and returns the work's least nanoseconds: the machine's
// speed, as near as other work on it lets us see.
func (b *bench) calibrate(ctx context.Context, argv ...string) (float64, error) {
	file := argv[len(argv)-1]
	best := math.Inf(1)
	for range 3 {
		os.Remove(file)
		if _, err := timed(b.cmd(ctx, b.self, argv...)); err != nil {
			return 0, err
		}
		_, ns, err := readWork(file)
		if err != nil {
			return 0, err
		}
		best = min(best, float64(ns))
	}
	return best, nil
}

// isoWorkloads calibrates the workloads cfg names to about cfg.target alone.
func (b *bench) isoWorkloads(ctx context.Context, cfg isoConfig) ([]isoWorkload, error) {
	target := cfg.target.Seconds()
	var out []isoWorkload
	for _, key := range cfg.workloads {
		cal := filepath.Join(b.dir, "calibrate-"+key)
		switch key {
		case "arith":
			rate := 0.0
			for range 3 {
				rate = max(rate, spinRate(100*time.Millisecond))
			}
			iters := strconv.FormatInt(int64(rate*target), 10)
			out = append(out, isoWorkload{key: key, name: "arithmetic, 1 thread", threads: 1, args: func(f string) []string {
				return []string{b.self, modeWork, "1", iters, f}
			}})
		case "stream":
			t, mib := strconv.Itoa(cfg.streamThreads), strconv.Itoa(cfg.streamMiB)
			ns, err := b.calibrate(ctx, modeStream, t, mib, "2", cal)
			if err != nil {
				return nil, fmt.Errorf("calibrate %s: %w", key, err)
			}
			passes := strconv.Itoa(max(1, int(math.Round(target/(ns/2/1e9)))))
			gibs := float64(cfg.streamThreads*cfg.streamMiB) / 1024 / (ns / 2 / 1e9)
			out = append(out, isoWorkload{key: key, name: fmt.Sprintf("memory bandwidth, %d thread%s × %d MiB", cfg.streamThreads, plural(cfg.streamThreads), cfg.streamMiB),
				alone:   fmt.Sprintf("alone, the bandwidth workload went through %s GiB/s of cache lines (each read and written back)", svg.Format(gibs)),
				threads: cfg.streamThreads, args: func(f string) []string {
					return []string{b.self, modeStream, t, mib, passes, f}
				}})
		case "chase":
			mib := strconv.Itoa(cfg.chaseMiB)
			const probe = 4_000_000
			ns, err := b.calibrate(ctx, modeChase, mib, strconv.Itoa(probe), cal)
			if err != nil {
				return nil, fmt.Errorf("calibrate %s: %w", key, err)
			}
			steps := strconv.FormatInt(max(1, int64(target/(ns/probe/1e9))), 10)
			out = append(out, isoWorkload{key: key, name: fmt.Sprintf("cache: pointer chase over %d MiB, 1 thread", cfg.chaseMiB),
				alone:   chasePace(ns / probe),
				threads: 1, args: func(f string) []string {
					return []string{b.self, modeChase, mib, steps, f}
				}})
		}
	}
	return out, nil
}

// chasePace says, for the page, what a pointer-chase step of ns
// nanoseconds means: a load served by the L3 takes some 10 to 50 ns, one
// from memory about 100 or more.
func chasePace(ns float64) string {
	s := fmt.Sprintf("the pointer chase took %s ns a step", svg.Format(ns))
	if ns >= 80 {
		return s + ", a load from memory, not from a cache (some 10 to 50 ns): here the chain does not stay in the cache even alone, so what hogs slow is its way to memory, not its cache"
	}
	return s + ", a load from the cache (one from memory takes about 100 ns or more)"
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// isoBackgrounds are the backgrounds cfg names.
func (b *bench) isoBackgrounds(cfg isoConfig) []isoBackground {
	all := map[string]isoBackground{
		"idle": {key: "idle", name: "alone (idle machine)", short: "alone", about: "nothing else runs"},
		"perfrun": {key: "perfrun", name: "alone, under perfrun", short: "alone, under perfrun", perflock: true, accent: true,
			daemon: daemonKey{policy: "freeze"}, about: "no hogs, the workload under `perfrun` (freeze policy): what perfrun and the job's cgroup cost the workload itself"},
		"plain": {key: "plain", name: "plain hogs", short: "plain hogs", hogs: true, sched: "normal",
			about: "the hogs are ordinary processes, as a colleague's build or a cron job is"},
		"nice": {key: "nice", name: "hogs under nice -n 19", short: "hogs under nice -n 19", hogs: true, hog: []string{"nice", "-n", "19"}, sched: "normal",
			about: "`nice -n 19 bench __memhog …`"},
		"sched-idle": {key: "sched-idle", name: "hogs under SCHED_IDLE", short: "hogs under SCHED_IDLE", hogs: true, sched: "idle",
			about: "each hog puts its threads under SCHED_IDLE with sched_setattr(2) first, as `chrt --idle 0` would"},
		"pls-freeze": {key: "pls-freeze", name: "pls hogs, frozen; workload under perfrun", short: "pls hogs, frozen", perflock: true, accent: true,
			daemon: daemonKey{policy: "freeze"}, hogs: true, hog: []string{"pls", "-q", "--"}, sched: "normal",
			about: "the hogs are `pls` jobs and the workload runs under `perfrun` (freeze policy): perflockd freezes them while it runs"},
		"pls-drain": {key: "pls-drain", name: "pls hogs, drained; workload under perfrun", short: "pls hogs, drained", perflock: true, accent: true,
			daemon: daemonKey{policy: "drain"}, hogs: true, hog: []string{"pls", "-q", "--"}, sched: "normal", loop: true, hogFor: "1s",
			about: "the hogs are a stream of 1-second `pls` jobs, restarted as they end, and the workload runs under `perfrun` (drain policy): it starts when the running ones have finished"},
		"shield": {key: "shield", name: fmt.Sprintf("plain hogs, shield (--shield %s); workload under perfrun", cfg.shield), short: "plain hogs, shield", perflock: true, accent: true,
			daemon: daemonKey{policy: "freeze", tag: "iso", shield: cfg.shield}, hogs: true, sched: "normal",
			about: fmt.Sprintf("plain hogs as above, and the workload under `perfrun` on a perflockd started with `--shield %s`, which confines everything outside an exclusive job to the housekeeping CPUs (`%s`) while the job runs", cfg.shield, cfg.shield)},
	}
	var out []isoBackground
	for _, k := range cfg.backgrounds {
		out = append(out, all[k])
	}
	return out
}

// isoResult is one workload beside one background, all repetitions.
type isoResult struct {
	secs  []float64 // the work's own time
	waits []float64 // fork → the workload's first instruction
	why   string    // not measured: why
}

// isolation: three workloads, each alone and beside hogs of every kind.
func (b *bench) isolation(ctx context.Context) error {
	cfg := b.iso
	reps := cfg.reps
	if reps <= 0 {
		reps = 5
		if b.quick {
			reps = 2
		}
	}
	if cfg.target <= 0 {
		cfg.target = 500 * time.Millisecond
	}
	sizes := b.isoSizes(&cfg)
	wls, err := b.isoWorkloads(ctx, cfg)
	if err != nil {
		return err
	}
	bgs := b.isoBackgrounds(cfg)
	hogsFor := func(wl isoWorkload) int {
		if cfg.hogs > 0 {
			return cfg.hogs
		}
		return max(1, b.cores-wl.threads)
	}
	type key struct{ w, c int }
	res := map[key]*isoResult{}
	for wi := range wls {
		for ci := range bgs {
			res[key{wi, ci}] = &isoResult{}
		}
	}
	refused := map[string]string{} // background → perflockd's reason
	hogMiB := strconv.Itoa(cfg.hogMiB)
	for rep := range reps {
		for wi, wl := range wls {
			for ci, bg := range bgs {
				r := res[key{wi, ci}]
				if why := refused[bg.key]; why != "" {
					r.why = why
					continue
				}
				sock := ""
				if bg.perflock {
					d, err := b.daemonFor(ctx, bg.daemon)
					var ref *refusal
					if errors.As(err, &ref) && bg.daemon.shield != "" {
						refused[bg.key], r.why = ref.reason, ref.reason
						progress("isolation %s: not measured: %s", bg.key, ref.reason)
						continue
					}
					if err != nil {
						return err
					}
					sock = d.sock
				}
				var h *hogs
				if bg.hogs {
					n := hogsFor(wl)
					dur := "0"
					if bg.hogFor != "" {
						dur = bg.hogFor
					}
					pre := slices.Clone(bg.hog)
					if sock != "" && len(pre) > 0 && pre[0] == "pls" {
						pre = append([]string{"pls", "--socket", sock}, pre[1:]...)
					}
					argv := append(pre, b.self, modeMemHog, hogMiB, dur, bg.sched)
					if h, err = b.startHogs(ctx, n, bg.loop, func() []string { return argv }); err != nil {
						return fmt.Errorf("isolation %s: %w", bg.key, err)
					}
					if err := h.waitReady(ctx, n); err != nil {
						h.halt()
						return fmt.Errorf("isolation %s: %w", bg.key, err)
					}
				}
				file := filepath.Join(b.dir, fmt.Sprintf("work-%d-%d-%d", rep, wi, ci))
				args := wl.args(file)
				if sock != "" {
					args = append([]string{"perfrun", "--socket", sock, "-q", "--"}, args...)
				}
				t0 := monoNS()
				_, err := timed(b.cmd(ctx, args[0], args[1:]...))
				if h != nil {
					h.halt()
				}
				if err != nil {
					return fmt.Errorf("isolation %s, %s: %w", wl.key, bg.key, err)
				}
				start, ns, err := readWork(file)
				if err != nil {
					return err
				}
				r.secs = append(r.secs, float64(ns)/1e9)
				r.waits = append(r.waits, float64(start-t0)/1e9)
			}
		}
		progress("isolation rep %d/%d", rep+1, reps)
	}

	// Ratios to the same workload alone, measured in the same run.
	idle := slices.IndexFunc(bgs, func(bg isoBackground) bool { return bg.key == "idle" })
	t := table{cols: []col{{"workload", false}, {"background", false}, {"hogs", false}, {"time, median", true},
		{"÷ alone: min", false}, {"median", false}, {"max", false}, {"CV", false}, {"fork → workload start, median", true}}}
	var bars []svg.Bar
	frozen, shielded := map[string]isoVerdict{}, map[string]isoVerdict{}
	for wi, wl := range wls {
		base, baseSpread := math.NaN(), math.NaN()
		if idle >= 0 {
			s := stats.Summarize(res[key{wi, idle}].secs)
			base, baseSpread = s.Median, (s.Max-s.Min)/s.Median
		}
		for ci, bg := range bgs {
			r := res[key{wi, ci}]
			nh := "–"
			if bg.hogs {
				nh = strconv.Itoa(hogsFor(wl))
			}
			if len(r.secs) == 0 {
				t.add(wl.name, bg.name, nh, "not measured: "+r.why, "–", "–", "–", "–", "–")
				bars = append(bars, svg.Bar{Group: wl.name, Label: bg.short, Text: "not measured (see the table)", Accent: bg.accent})
				if bg.key == "shield" {
					shielded[wl.key] = isoVerdict{why: r.why}
				}
				continue
			}
			var ratios []float64
			for _, s := range r.secs {
				ratios = append(ratios, s/base)
			}
			q := stats.Summarize(ratios)
			s := stats.Summarize(r.secs)
			t.add(wl.name, bg.name, nh, fsec(s.Median), fx(q.Min), fx(q.Median), fx(q.Max), fmt.Sprintf("%.1f%%", 100*s.CV), fms(stats.Median(r.waits)))
			bars = append(bars, svg.Bar{Group: wl.name, Label: bg.short, Value: q.Median, Lo: q.Min, Hi: q.Max, Accent: bg.accent})
			v := isoVerdict{ratio: q.Median, spread: q.Max - q.Min, idleSpread: baseSpread}
			switch bg.key {
			case "pls-freeze":
				frozen[wl.key] = v
			case "shield":
				shielded[wl.key] = v
			}
		}
	}
	img, err := b.report.chart("isolation", svg.Chart{
		Title: "Isolation: workloads beside memory-streaming hogs, as a multiple of their time alone",
		Subtitle: fmt.Sprintf("%d CPUs; median of %d, whiskers min–max; goals: frozen pls hogs ≤ 1.03×, plain hogs with the shield ≤ 1.10×",
			b.cores, reps),
		Unit: "× time alone (lower is better; 1 = undisturbed)", Bars: bars, Goal: 1.10, GoalLabel: "1.10×",
	}, false)
	if err != nil {
		return err
	}
	if g, ok := isoGoal("isolation: pls hogs frozen", "≤ 1.03× alone, spread ≤ alone's, every workload", 1.03, wls, frozen); ok {
		b.report.goals = append(b.report.goals, g)
	}
	if g, ok := isoGoal("isolation: plain hogs, shield", "≤ 1.10× alone, spread ≤ alone's, every workload", 1.10, wls, shielded); ok {
		b.report.goals = append(b.report.goals, g)
	}

	var paces []string
	for _, wl := range wls {
		if wl.alone != "" {
			paces = append(paces, wl.alone)
		}
	}
	pace := ""
	if len(paces) > 0 {
		pace = "Calibrated here: " + strings.Join(paces, "; ") + "."
	}
	var about []string
	for _, bg := range bgs {
		about = append(about, fmt.Sprintf("- **%s**: %s.", bg.name, bg.about))
	}
	hogRule := "one hog per CPU the workload leaves (at least one)"
	if cfg.hogs > 0 {
		hogRule = fmt.Sprintf("%d hogs beside every workload (-hogs)", cfg.hogs)
	}
	b.report.add(section{title: "5. Isolation", body: []string{
		fmt.Sprintf("Three workloads, each calibrated to about %s when the machine is idle and timed inside its own process (its memory mapped, on huge pages where the kernel offers them, and touched first, not timed):\n\n"+
			"- **arithmetic**: integer xorshift rounds on 1 thread, no memory traffic.\n"+
			"- **memory bandwidth**: %d thread%s, each writing one word of every cache line of its own %d MiB buffer, pass after pass (%d MiB in all).\n"+
			"- **cache**: 1 thread following a random cyclic chain through the cache lines of %d MiB: every load depends on the previous one.\n\n"+
			"Beside them, hogs: each streams over a buffer of its own (%d MiB) as the bandwidth workload does, one CPU each; %s. Sizes come from the cache: %s. "+
			"The backgrounds, every workload and background interleaved, %d repetitions; ratios are to the same workload alone, measured in the same run:",
			cfg.target, cfg.streamThreads, plural(cfg.streamThreads), cfg.streamMiB, cfg.streamThreads*cfg.streamMiB, cfg.chaseMiB, cfg.hogMiB, hogRule, sizes, reps),
		strings.Join(about, "\n"),
		b.report.markdown(t), img,
		pace,
		b.isoWhere(),
		"Scheduler priorities give the workload its CPU back when a hog shares it (pass `-hogs` above the free CPUs to see that: `nice -n 19` hogs get a weight of 15 against 1024, SCHED_IDLE less), " +
			"but hogs on the other CPUs take what those CPUs share with the workload's: cache, memory bandwidth, SMT siblings, the turbo and thermal budget. " +
			"Freezing them (pls jobs) stops them; the shield confines everything outside the exclusive job to the housekeeping CPUs. " +
			"The spread (min–max, CV) is part of the result: a benchmark needs repeatable times, not only a good median.",
	}})
	return nil
}

// isoWhere is the page's note on what this machine can show.
func (b *bench) isoWhere() string {
	m := b.report.m
	if m.Cores >= 8 {
		where := fmt.Sprintf("Measured on %d CPUs", m.Cores)
		if m.VM {
			where += " of a virtual machine (the hypervisor decides what its vCPUs share)"
		}
		return where + "."
	}
	vm := ""
	if m.VM {
		vm = ", a virtual machine: its hypervisor decides what the vCPUs share"
	}
	return fmt.Sprintf("**Measured on %d CPUs%s.** So few CPUs leave room for few hogs: that says little about a big machine, "+
		"where many hogs share one L3 and one memory controller with a workload of several threads, and a machine this small mutes cache effects "+
		"(see the chase's pace above); how much memory bandwidth one hog takes depends on the host beneath. "+
		"On a 16-core host (300 MiB L3, 12 streaming hogs; measured separately, not by this run) a 4-thread bandwidth-bound workload slowed 1.65× beside plain hogs, "+
		"1.78× under nice, 1.44× under SCHED_IDLE and 0.96× as frozen pls jobs; the pointer chase 1.95×, 2.04×, 2.08× and 1.04×. "+
		"`make bench-static` builds what it takes to run this page on such a machine.", m.Cores, vm)
}

// isoGoal is the goal row for one background over the workloads: met when
// every workload's median ratio is ≤ limit and its spread (max − min, in
// ratios) no wider than alone's. ok is false when none was run.
func isoGoal(name, target string, limit float64, wls []isoWorkload, vs map[string]isoVerdict) (goal, bool) {
	var parts, whys []string
	met, measured := true, false
	for _, wl := range wls {
		v, ok := vs[wl.key]
		if !ok {
			continue
		}
		if v.why != "" {
			parts = append(parts, wl.key+": not measured")
			whys = append(whys, "not measured: "+v.why)
			met = false
			continue
		}
		measured = true
		parts = append(parts, fmt.Sprintf("%s %s (spread %s, alone %s)", wl.key, fx(v.ratio), svg.Format(v.spread), svg.Format(v.idleSpread)))
		if v.ratio > limit {
			met = false
			whys = append(whys, fmt.Sprintf("%s: %s > %s", wl.key, fx(v.ratio), fx(limit)))
		} else if v.spread > v.idleSpread {
			met = false
			whys = append(whys, fmt.Sprintf("%s: spread %s wider than alone's %s", wl.key, svg.Format(v.spread), svg.Format(v.idleSpread)))
		}
	}
	if len(parts) == 0 {
		return goal{}, false
	}
	g := goal{name: name, target: target, measured: strings.Join(parts, "; "), verdict: "**met**"}
	switch {
	case !measured:
		g.measured, g.verdict, g.why = "–", "not measured", slices.Compact(whys)[0]
	case !met:
		g.verdict, g.why = "**missed**", strings.Join(slices.Compact(whys), "; ")
	}
	return g, true
}

// readWork reads a workload's "START NS" line.
func readWork(file string) (start, ns int64, err error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, 0, err
	}
	if _, err := fmt.Sscan(string(b), &start, &ns); err != nil {
		return 0, 0, fmt.Errorf("%s: %q: %w", file, b, err)
	}
	return start, ns, nil
}

func readInt(file string) (int64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}
