package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/perflock/perflock/bench/internal/stats"
	"github.com/perflock/perflock/bench/internal/svg"
)

// frozeTook matches the daemon's log line for a confirmed freeze.
var frozeTook = regexp.MustCompile(`msg="shared jobs frozen" took=(\S+)`)

// latency: from an exclusive request to the job's first instruction, with
// pls hogs running (to be frozen) and without.
func (b *bench) latency(ctx context.Context) error {
	reps := 10
	if b.quick {
		reps = 3
	}
	d, err := b.daemonTagged(ctx, "", "freeze", "latency")
	if err != nil {
		return err
	}
	counts := []int{0, b.cores, 2 * b.cores, 4 * b.cores}
	if b.driver == "none" {
		counts = counts[:1] // nothing can be frozen: perfrun would wait for endless hogs
	}
	toExec := map[int][]float64{}
	frozen := map[int][]float64{}
	for rep := range reps {
		for _, n := range counts {
			var h *hogs
			if n > 0 {
				if h, err = b.startHogs(ctx, n, false, func() []string {
					return []string{"pls", "--socket", d.sock, "-q", "--", b.self, modeHog, "0"}
				}); err != nil {
					return err
				}
				if err := h.waitReady(ctx, n); err != nil {
					h.halt()
					return err
				}
			}
			before := len(frozeTook.FindAllStringSubmatch(d.logText(ctx), -1))
			file := filepath.Join(b.dir, fmt.Sprintf("latency-%d-%d", rep, n))
			c := b.cmd(ctx, "perfrun", "--socket", d.sock, "-q", "--", b.self, modeStamp, file)
			t0 := monoNS()
			_, err := timed(c)
			if h != nil {
				h.halt()
			}
			if err != nil {
				return fmt.Errorf("freeze latency: %w", err)
			}
			data, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			var start, end int64
			fmt.Sscan(string(data), &start, &end)
			toExec[n] = append(toExec[n], float64(start-t0)/1e9)
			if n > 0 {
				// The log line may land a moment after the job ran.
				for range 50 {
					m := frozeTook.FindAllStringSubmatch(d.logText(ctx), -1)
					if len(m) > before {
						if dur, err := time.ParseDuration(m[before][1]); err == nil {
							frozen[n] = append(frozen[n], dur.Seconds())
						}
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}
		if (rep+1)%5 == 0 || rep+1 == reps {
			progress("freeze latency rep %d/%d", rep+1, reps)
		}
	}
	base := stats.Median(toExec[0])
	t := table{cols: []col{{"pls hogs running", false}, {"perfrun start → job's first instruction, median", true}, {"p90", true}, {"÷ no hogs", false}, {"freeze confirmed (daemon: freeze call → `frozen 1`), median", true}, {"max", true}}}
	var bars []svg.Bar
	for _, n := range counts {
		s := stats.Summarize(toExec[n])
		fz, fzMax := "–", "–"
		if n > 0 && len(frozen[n]) > 0 {
			fz, fzMax = fms(stats.Median(frozen[n])), fms(stats.Percentile(frozen[n], 100))
		} else if n > 0 {
			fz = "not logged"
		}
		t.add(fmt.Sprint(n), fms(s.Median), fms(s.P90), fx(s.Median/base), fz, fzMax)
		bars = append(bars, svg.Bar{Label: fmt.Sprintf("%d pls hogs", n), Value: s.Median * 1000, Lo: s.Min * 1000, Hi: s.P90 * 1000, Accent: true, Text: fms(s.Median)})
	}
	img, err := b.report.chart("freeze-latency", svg.Chart{
		Title:    "Freeze latency: perfrun start to the job's first instruction",
		Subtitle: fmt.Sprintf("with N spinning pls jobs to freeze first (freeze policy); median of %d, whiskers min–p90", reps),
		Unit:     "milliseconds (lower is better)", Bars: bars,
	}, true)
	if err != nil {
		return err
	}
	note := ""
	if b.driver == "none" {
		note = "The none driver cannot freeze: with hogs running, perfrun waits for them to end (they are stopped after each run), so this scenario only means something with cgroups."
	}
	b.report.add(section{title: "6. Freeze latency", body: []string{
		fmt.Sprintf("N pls jobs spin (each `pls -- bench __hog 0`, one CPU each); then `perfrun -- bench __stamp FILE` starts. "+
			"The first column is measured from just before perfrun's fork to the job's first instruction (its CLOCK_MONOTONIC stamp): "+
			"perfrun's start while the hogs still run, the request, the freeze and its confirmation, the placing and the exec. "+
			"The freeze column is the daemon's own log of each freeze (`shared jobs frozen took=…`: writing `cgroup.freeze` until `cgroup.events` says `frozen 1`). %d repetitions, N interleaved.", reps),
		b.report.markdown(t), img, note,
		"With hogs running, perfrun itself starts on a CPU it shares with them until they are frozen, so part of the extra time is perfrun's own start at half speed or worse.",
	}})
	return nil
}
