// Command bench measures perflock against the tools people use today
// (flock(1), plain processes, nice) and writes docs/benchmarks.md with SVG
// charts under docs/bench/. `make bench` runs it; the page it writes
// describes the scenarios.
//
// It starts its own perflockd daemons (sockets in a temporary folder, a
// cgroup subtree of their own) with the cgroupfs driver when it runs as
// root on a writable cgroup2 tree, else the none driver. With -systemd it
// drives the installed perflockd.service instead (the systemd tier, in a
// QEMU guest: test/vm/run with PERFLOCK_VM_BENCH=1).
//
// The same binary is also the benchmarks' job: re-executed with a helper
// mode (__stamp, __work, __hog) it records timestamps, does a fixed amount
// of CPU work, or spins.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

func main() {
	if ok, err := helperMain(os.Args[1:]); ok {
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var (
		binDir   = fs.String("bin", "bin", "folder with perfrun, pls, wholock and perflockd (built by make build)")
		out      = fs.String("out", "docs/benchmarks.md", "the page to write")
		charts   = fs.String("charts", "docs/bench", "folder for the SVG charts (empty: none)")
		only     = fs.String("only", "", "comma-separated scenarios to run: fairness,overhead,handoff,scale,isolation,latency (default all)")
		quick    = fs.Bool("quick", false, "fewer repetitions: a smoke run, not for the page")
		systemd  = fs.Bool("systemd", false, "drive the installed perflockd.service (systemd driver) instead of daemons of its own; ratios only")
		clients  = fs.Int("scale-clients", 10000, "waiting clients in the scale scenario")
		driverFl = fs.String("driver", "", "perflockd driver for the host run (default: cgroupfs when root with a writable cgroup2 tree, else none)")
		note     = fs.String("note", "", "a sentence about the machine for the page (what it is, what else runs there)")

		isoWorkloads   = fs.String("isolation-workloads", "", "isolation: comma-separated workloads: "+strings.Join(isoWorkloadNames, ",")+" (default all)")
		isoBackgrounds = fs.String("isolation-backgrounds", "", "isolation: comma-separated backgrounds: "+strings.Join(isoBackgroundNames, ",")+", or all (default all but pls-drain)")
		isoReps        = fs.Int("isolation-reps", 0, "isolation: repetitions (default 5, 2 with -quick)")
		isoTarget      = fs.Duration("isolation-time", 500*time.Millisecond, "isolation: each workload's time alone, about")
		hogs           = fs.Int("hogs", 0, "isolation: hogs beside every workload (default: one per CPU the workload leaves, at least 1)")
		streamThreads  = fs.Int("stream-threads", 0, "isolation: threads of the memory-bandwidth workload (default: a quarter of the CPUs, at least 1)")
		streamMiB      = fs.Int("stream-mib", 0, "isolation: MiB each stream thread writes over (default: 4 × the L3 in all, at least 64 each)")
		hogMiB         = fs.Int("hog-mib", 0, "isolation: MiB each hog streams over (default: 2 × the L3 over CPUs − 1 hogs, at least 32 each)")
		chaseMiB       = fs.Int("chase-mib", 16, "isolation: MiB of the cache-bound workload's pointer chase")
		shield         = fs.String("shield", "0", "isolation: the housekeeping CPUs for perflockd --shield in the shield background")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	bin, err := filepath.Abs(*binDir)
	if err != nil {
		return err
	}
	for _, c := range []string{"perfrun", "pls", "wholock", "perflockd"} {
		if _, err := os.Stat(filepath.Join(bin, c)); err != nil {
			return fmt.Errorf("%w (run make build, or pass -bin)", err)
		}
	}
	dir, err := os.MkdirTemp("", "perflock-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	b := &bench{bin: bin, self: self, dir: dir, quick: *quick, cores: runtime.NumCPU(), daemons: map[daemonKey]*daemon{}, systemd: *systemd}
	b.iso = isoConfig{reps: *isoReps, target: *isoTarget, hogs: *hogs, streamThreads: *streamThreads,
		streamMiB: *streamMiB, hogMiB: *hogMiB, chaseMiB: *chaseMiB, shield: *shield}
	if b.iso.workloads, err = pickNames("isolation-workloads", *isoWorkloads, isoWorkloadNames, isoWorkloadNames); err != nil {
		return err
	}
	if b.iso.backgrounds, err = pickNames("isolation-backgrounds", *isoBackgrounds, isoBackgroundNames, isoDefaultBackgrounds); err != nil {
		return err
	}
	if *shield == "" {
		return fmt.Errorf("-shield: give the housekeeping CPUs, e.g. 0 or 0-1")
	}
	switch {
	case *systemd:
		b.driver = "systemd"
	case *driverFl != "":
		b.driver = *driverFl
	default:
		b.driver = pickDriver()
	}
	defer b.close()
	rel := *charts
	if *charts != "" && *out != "" {
		if r, err := filepath.Rel(filepath.Dir(*out), *charts); err == nil {
			rel = r
		}
	}
	b.report = &report{ratiosOnly: *systemd, chartDir: *charts, chartRel: rel, m: describeMachine(ctx, b.driver)}
	b.report.m.Note = *note
	progress("%d cores, %s, kernel %s, driver %s; scratch %s", b.report.m.Cores, b.report.m.Model, b.report.m.Kernel, b.driver, dir)
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		b.report.notes = append(b.report.notes, "Load average when the run started: "+strings.Join(strings.Fields(string(la))[:3], " ")+
			fmt.Sprintf(". Other work may share this machine (other test runs on its %d cores): every scenario", b.cores)+
			" interleaves its peers (ABAB…) so that noise hits all of them, and the tables compare them as ratios.")
	}
	if *quick {
		b.report.notes = append(b.report.notes, "**A -quick run: fewer repetitions than the page normally has.**")
	}

	scenarios := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"fairness", b.fairness},
		{"overhead", b.overhead},
		{"handoff", b.handoff},
		{"scale", func(ctx context.Context) error { return b.scale(ctx, *clients) }},
		{"isolation", b.isolation},
		{"latency", b.latency},
	}
	want := map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			want[s] = true
		}
	}
	t0 := time.Now()
	var failed, loads []string
	for _, s := range scenarios {
		if len(want) > 0 && !want[s.name] {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		st := time.Now()
		progress("== %s", s.name)
		load0 := load1()
		err := s.fn(ctx)
		loads = append(loads, fmt.Sprintf("%s %s → %s", s.name, load0, load1()))
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return err
			}
			progress("%s FAILED: %v", s.name, err)
			failed = append(failed, s.name)
			b.report.add(section{title: s.name + ": failed", body: []string{"This scenario failed in this run: `" + err.Error() + "`"}})
			continue
		}
		progress("%s done in %v", s.name, time.Since(st).Round(100*time.Millisecond))
	}
	elapsed := time.Since(t0).Round(time.Second).String()
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		b.report.notes = append(b.report.notes, "Load average when the run ended: "+strings.Join(strings.Fields(string(la))[:3], " ")+
			"; the 1-minute figure at each scenario's start → end: "+strings.Join(loads, ", ")+
			". A scenario's own processes count too (an isolation run is one workload and its hogs), but a figure well above them means other work ran meanwhile.")
	}
	title, intro := "Benchmarks", hostIntro
	if *systemd {
		title, intro = "Benchmarks: the systemd tier (ratios only)", systemdIntro
	}
	if *out != "" {
		if err := b.report.write(*out, title, intro, elapsed); err != nil {
			return err
		}
		progress("wrote %s (scenarios took %s)", *out, elapsed)
	}
	if len(failed) > 0 {
		return fmt.Errorf("scenarios failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

// load1 is the 1-minute load average, "?" when unknown.
func load1() string {
	la, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(la)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

const hostIntro = "perflock measured beside what people use today — flock(1), plain processes, `nice`, SCHED_IDLE — in one run on one machine. " +
	"Every scenario runs its peers interleaved and compares them as ratios: these machines are shared and noisy, absolute times drift. " +
	"Regenerate with `make bench` (about 5 minutes on 2 CPUs; it builds the commands, starts daemons of its own and writes this page and " +
	"the charts in [bench/](bench/)); `go run ./bench -h` lists the flags that pick and size scenarios. The code is in [bench/](../bench/main.go). " +
	"For a machine without Go, `make bench-static` builds static binaries of the commands and the bench program into `bin/static`: " +
	"copy that folder there and, as root, run `./bench -bin . -note 'what the machine is'`. " +
	"The same scenarios under systemd, in a QEMU guest, as ratios only: `make bench-systemd` writes [bench/systemd-bookworm.md](bench/systemd-bookworm.md) " +
	"(there, under software emulation, the exclusive job of the fairness scenario waits about as long as flock(1)'s: " +
	"most of its wait is its own perfrun process starting on two emulated CPUs busy starting the stream's pls clients, see that page)."

const systemdIntro = "The scenarios of [benchmarks.md](../benchmarks.md), run by `make bench-systemd` inside a Debian bookworm guest " +
	"(systemd 252 as PID 1) under QEMU's software emulation, against perflockd.service with the systemd driver (installed with " +
	"`perflockd install`, reconfigured per scenario with a drop-in). Emulation makes absolute times meaningless (a process spawn " +
	"costs about 70 ms), so this page shows ratios between peers measured in the same guest, and no absolute times."
