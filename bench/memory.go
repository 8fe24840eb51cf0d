package main

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The memory workloads and hogs of the isolation scenario. A workload
// prepares its memory first (allocates it and touches every page) and
// times only the work; a hog prepares its memory, says so (see envReady),
// then streams over it until it is stopped.

// envReady names, in a hog's environment, a Unix socket to dial once the hog
// runs at full speed: the bench waits for every hog before it starts the
// workload, instead of sleeping.
const envReady = "PERFLOCK_BENCH_READY"

// lineWords is how many uint64 fill a 64-byte cache line.
const lineWords = 8

// anonMem maps n bytes of anonymous memory, backed by huge pages where
// the kernel offers them (transparent huge pages, always or madvise): so
// the TLB does not decide a workload's speed, and a run does not depend on
// whether the Go heap happened to get huge pages. It is never unmapped: the
// helpers exit when done.
func anonMem(n int) []byte {
	m, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		panic(fmt.Sprintf("mmap %d bytes: %v", n, err))
	}
	unix.Madvise(m, unix.MADV_HUGEPAGE) // not offered: small pages
	return m
}

// touched maps mib MiB (anonMem) and writes every page of it.
func touched(mib int) []uint64 {
	m := anonMem(mib << 20)
	buf := unsafe.Slice((*uint64)(unsafe.Pointer(&m[0])), len(m)/8)
	for i := 0; i < len(buf); i += 4096 / 8 {
		buf[i] = 1
	}
	return buf
}

// streamPass writes one word of every cache line of buf, in order: each
// line is read and written back, a memory-bandwidth-bound loop once buf is
// much larger than the caches.
func streamPass(buf []uint64) {
	for i := 0; i < len(buf); i += lineWords {
		buf[i]++
	}
}

// stream runs passes streaming passes over mib MiB in each of threads
// threads (an OS thread and a buffer each) and returns the nanoseconds the
// passes took, from when every buffer was ready.
func stream(threads, mib, passes int) int64 {
	runtime.GOMAXPROCS(threads)
	bufs := make([][]uint64, threads)
	var prep sync.WaitGroup
	for i := range bufs {
		prep.Add(1)
		go func() { defer prep.Done(); bufs[i] = touched(mib) }()
	}
	prep.Wait()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, buf := range bufs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			<-start
			for range passes {
				streamPass(buf)
			}
		}()
	}
	t0 := monoNS()
	close(start)
	wg.Wait()
	return monoNS() - t0
}

// chaseRing is a random cyclic permutation of the cache lines of mib MiB:
// the first word of each line holds the index of the next line's first
// word, every line is visited once per cycle (Sattolo's algorithm, a fixed
// seed), so each step is a load that depends on the previous one and no
// prefetcher can guess.
func chaseRing(mib int) []uint32 {
	const lineU32 = 64 / 4
	lines := mib << 20 / 64
	order := make([]uint32, lines)
	for i := range order {
		order[i] = uint32(i)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := lines - 1; i > 0; i-- {
		j := r.IntN(i)
		order[i], order[j] = order[j], order[i]
	}
	m := anonMem(lines * 64)
	ring := unsafe.Slice((*uint32)(unsafe.Pointer(&m[0])), lines*lineU32)
	for i := range order {
		ring[order[i]*lineU32] = order[(i+1)%lines] * lineU32
	}
	return ring
}

// chase follows ring for steps steps and returns the nanoseconds it took
// (the ring made and touched first).
func chase(mib int, steps int64) int64 {
	ring := chaseRing(mib)
	var at uint32
	t0 := monoNS()
	for range steps {
		at = ring[at]
	}
	d := monoNS() - t0
	sink(uint64(at))
	return d
}

// memHog streams over mib MiB until d has passed (0: until killed), on one
// OS thread; with idle it first puts every thread of the process under
// SCHED_IDLE. It dials envReady, when set, once it is ready.
func memHog(mib int, d time.Duration, idle bool) error {
	runtime.GOMAXPROCS(1)
	runtime.LockOSThread()
	if idle {
		if err := schedIdle(); err != nil {
			return err
		}
	}
	buf := touched(mib)
	streamPass(buf)
	if err := sayReady(); err != nil {
		return err
	}
	end := time.Now().Add(d)
	for d == 0 || time.Now().Before(end) {
		streamPass(buf)
	}
	return nil
}

// sayReady dials envReady, when set.
func sayReady() error {
	path := os.Getenv(envReady)
	if path == "" {
		return nil
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		return fmt.Errorf("tell the bench this hog runs: %w", err)
	}
	return c.Close()
}

// schedIdle puts every thread of this process under SCHED_IDLE, as
// `chrt --idle 0` does for a command (sched_setattr(2) applies to one
// thread; threads made later inherit it from their maker), and checks the
// calling thread's policy.
func schedIdle() error {
	tids, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_IDLE}
	for _, t := range tids {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetAttr(tid, &attr, 0); err != nil && err != unix.ESRCH {
			return fmt.Errorf("SCHED_IDLE for thread %d: %w", tid, err)
		}
	}
	got, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		return err
	}
	if got.Policy != unix.SCHED_IDLE {
		return fmt.Errorf("SCHED_IDLE did not hold: policy %d", got.Policy)
	}
	return nil
}

// cacheInfo is the size of the largest CPU cache (the last level, usually
// L3) of CPU 0 in MiB and its level, from sysfs; 0 when unknown.
func cacheInfo() (mib, level int) {
	dirs, _ := os.ReadDir("/sys/devices/system/cpu/cpu0/cache")
	for _, d := range dirs {
		if !strings.HasPrefix(d.Name(), "index") {
			continue
		}
		dir := "/sys/devices/system/cpu/cpu0/cache/" + d.Name() + "/"
		lv, err1 := readInt(dir + "level")
		sz, err2 := os.ReadFile(dir + "size")
		if err1 != nil || err2 != nil || int(lv) < level {
			continue
		}
		s := strings.TrimSpace(string(sz))
		mult := 1
		switch {
		case strings.HasSuffix(s, "K"):
			mult, s = 1<<10, strings.TrimSuffix(s, "K")
		case strings.HasSuffix(s, "M"):
			mult, s = 1<<20, strings.TrimSuffix(s, "M")
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			continue
		}
		mib, level = max(1, n*mult>>20), int(lv)
	}
	return mib, level
}

// memAvailableMiB is MemAvailable of /proc/meminfo in MiB; 0 when unknown.
func memAvailableMiB() int {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n >> 10
		}
	}
	return 0
}
