package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Helper modes: the bench binary re-executed as a job. Their names start
// with "__" so they cannot be confused with flags.
//
// A workload (__work, __stream, __chase) appends "START NS\n" to FILE: START
// is when the process began (CLOCK_MONOTONIC ns, comparable with the
// bench's), NS how long the work took, its preparation (memory allocated
// and touched) left out.
const (
	modeStamp  = "__stamp"  // __stamp FILE: append "START END\n", CLOCK_MONOTONIC ns
	modeWork   = "__work"   // __work THREADS ITERS FILE: fixed integer arithmetic
	modeStream = "__stream" // __stream THREADS MIB PASSES FILE: stream over MIB MiB per thread
	modeChase  = "__chase"  // __chase MIB STEPS FILE: a random pointer chase over MIB MiB
	modeHog    = "__hog"    // __hog DURATION: spin on one CPU (0: forever)
	modeMemHog = "__memhog" // __memhog MIB DURATION normal|idle: stream over MIB MiB (0: forever)
)

// monoNS is CLOCK_MONOTONIC in nanoseconds, comparable across processes.
func monoNS() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err)
	}
	return ts.Nano()
}

// helperMain runs a helper mode if args names one, and reports whether it did.
func helperMain(args []string) (bool, error) {
	if len(args) == 0 {
		return false, nil
	}
	start := monoNS()
	switch args[0] {
	case modeStamp:
		if len(args) != 2 {
			return true, fmt.Errorf("usage: %s FILE", modeStamp)
		}
		return true, appendLine(args[1], fmt.Sprintf("%d %d\n", start, monoNS()))
	case modeWork:
		if len(args) != 4 {
			return true, fmt.Errorf("usage: %s THREADS ITERS FILE", modeWork)
		}
		threads, err1 := strconv.Atoi(args[1])
		iters, err2 := strconv.ParseInt(args[2], 10, 64)
		if err1 != nil || err2 != nil || threads < 1 {
			return true, fmt.Errorf("%s: bad THREADS or ITERS", modeWork)
		}
		t0 := monoNS()
		work(threads, iters)
		return true, appendLine(args[3], fmt.Sprintf("%d %d\n", start, monoNS()-t0))
	case modeStream:
		if len(args) != 5 {
			return true, fmt.Errorf("usage: %s THREADS MIB PASSES FILE", modeStream)
		}
		threads, err1 := strconv.Atoi(args[1])
		mib, err2 := strconv.Atoi(args[2])
		passes, err3 := strconv.Atoi(args[3])
		if err1 != nil || err2 != nil || err3 != nil || threads < 1 || mib < 1 || passes < 1 {
			return true, fmt.Errorf("%s: bad THREADS, MIB or PASSES", modeStream)
		}
		ns := stream(threads, mib, passes)
		return true, appendLine(args[4], fmt.Sprintf("%d %d\n", start, ns))
	case modeChase:
		if len(args) != 4 {
			return true, fmt.Errorf("usage: %s MIB STEPS FILE", modeChase)
		}
		mib, err1 := strconv.Atoi(args[1])
		steps, err2 := strconv.ParseInt(args[2], 10, 64)
		if err1 != nil || err2 != nil || mib < 1 || steps < 1 {
			return true, fmt.Errorf("%s: bad MIB or STEPS", modeChase)
		}
		ns := chase(mib, steps)
		return true, appendLine(args[3], fmt.Sprintf("%d %d\n", start, ns))
	case modeMemHog:
		if len(args) != 4 || (args[3] != "normal" && args[3] != "idle") {
			return true, fmt.Errorf("usage: %s MIB DURATION normal|idle", modeMemHog)
		}
		mib, err := strconv.Atoi(args[1])
		if err != nil || mib < 1 {
			return true, fmt.Errorf("%s: bad MIB", modeMemHog)
		}
		d, err := time.ParseDuration(args[2])
		if err != nil {
			return true, err
		}
		return true, memHog(mib, d, args[3] == "idle")
	case modeHog:
		if len(args) != 2 {
			return true, fmt.Errorf("usage: %s DURATION", modeHog)
		}
		d, err := time.ParseDuration(args[1])
		if err != nil {
			return true, err
		}
		return true, hog(d)
	}
	return false, nil
}

// appendLine appends s to file in one write (O_APPEND: lines from
// concurrent jobs do not interleave).
func appendLine(file, s string) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// work spends iters rounds of integer arithmetic, split over threads
// goroutines, each on an OS thread of its own.
func work(threads int, iters int64) {
	runtime.GOMAXPROCS(threads)
	var wg sync.WaitGroup
	per := iters / int64(threads)
	for i := range threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			sink(spin(per, uint64(i)+1))
		}()
	}
	wg.Wait()
}

// spin is the unit of CPU work: a xorshift generator, n rounds.
func spin(n int64, x uint64) uint64 {
	for range n {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

var sinkMu sync.Mutex
var sinkV uint64

func sink(v uint64) { sinkMu.Lock(); sinkV ^= v; sinkMu.Unlock() }

// hog spins one CPU for d, or forever when d is 0; it dials envReady, when
// set, as it starts.
func hog(d time.Duration) error {
	runtime.GOMAXPROCS(1)
	if err := sayReady(); err != nil {
		return err
	}
	end := time.Now().Add(d)
	for d == 0 || time.Now().Before(end) {
		sink(spin(1<<20, 7))
	}
	return nil
}

// spinRate measures spin rounds per second on this CPU, over about dur.
func spinRate(dur time.Duration) float64 {
	var n int64
	t0 := time.Now()
	for time.Since(t0) < dur {
		sink(spin(1<<18, 3))
		n += 1 << 18
	}
	return float64(n) / time.Since(t0).Seconds()
}
