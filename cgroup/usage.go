package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Files a run report reads.
const (
	cpuPressureFile = "cpu.pressure"
	procStatFile    = "/proc/stat"
)

// CPUStat is a cgroup's cpu.stat with what it says about throttling: the figures a run report
// takes at the start and the end of a job.
type CPUStat struct {
	Stat
	// NrThrottled is nr_throttled: the periods in which a CPU quota held the cgroup back.
	NrThrottled uint64
	// Throttling reports whether cpu.stat has nr_throttled and throttled_usec, that is whether
	// the cpu controller is enabled for the cgroup; without it NrThrottled and Throttled are not
	// measured (and read as zero).
	Throttling bool
}

// ReadCPUStat reads the cpu.stat of the cgroup directory dir with the package's own parser.
func ReadCPUStat(dir string) (CPUStat, error) {
	p := filepath.Join(dir, cpuStatFile)
	f, err := os.Open(p)
	if err != nil {
		return CPUStat{}, err
	}
	defer f.Close()
	s, err := parseCPUStat(f)
	if err != nil {
		return CPUStat{}, fmt.Errorf("%s: %w", p, err)
	}
	return s, nil
}

// parseCPUStat parses cpu.stat. Missing keys read as zero; Throttling says whether the
// throttling keys are there.
func parseCPUStat(r io.Reader) (CPUStat, error) {
	m, err := parseKeyed(r)
	if err != nil {
		return CPUStat{}, err
	}
	us := func(k string) time.Duration { return time.Duration(m[k]) * time.Microsecond }
	_, nr := m["nr_throttled"]
	_, tu := m["throttled_usec"]
	return CPUStat{
		Stat:        Stat{CPU: us("usage_usec"), User: us("user_usec"), System: us("system_usec"), Throttled: us("throttled_usec")},
		NrThrottled: m["nr_throttled"],
		Throttling:  nr && tu,
	}, nil
}

// ErrNoPSI means the kernel does not track pressure stall information for the cgroup: it was built
// without PSI (no cpu.pressure file), booted with psi=0, or PSI is off for the cgroup
// (cgroup.pressure 0).
var ErrNoPSI = errors.New("cgroup: no pressure stall information (PSI)")

// Pressure is the totals of a cpu.pressure file: how long some (or all) of the cgroup's runnable
// tasks waited for a CPU, since the cgroup was made.
type Pressure struct {
	Some time.Duration
	Full time.Duration
	// HasFull reports whether the file has a "full" line (cgroups since Linux 5.13).
	HasFull bool
}

// ReadPressure reads the cpu.pressure of the cgroup directory dir. It returns an error wrapping
// ErrNoPSI when the kernel keeps no such figures.
func ReadPressure(dir string) (Pressure, error) {
	p := filepath.Join(dir, cpuPressureFile)
	b, err := os.ReadFile(p)
	switch {
	case errors.Is(err, os.ErrNotExist) && dirExists(dir):
		return Pressure{}, fmt.Errorf("%w: %s is missing (a kernel without CONFIG_PSI)", ErrNoPSI, p)
	case errors.Is(err, unix.EOPNOTSUPP):
		return Pressure{}, fmt.Errorf("%w: %s: %v (psi=0 on the kernel command line, or cgroup.pressure 0)", ErrNoPSI, p, err)
	case err != nil:
		return Pressure{}, err
	}
	ps, err := parsePressure(strings.NewReader(string(b)))
	if err != nil {
		return Pressure{}, fmt.Errorf("%s: %w", p, err)
	}
	return ps, nil
}

func dirExists(dir string) bool {
	fi, err := os.Stat(dir)
	return err == nil && fi.IsDir()
}

// parsePressure parses a PSI file ("some avg10=0.00 avg60=0.00 avg300=0.00 total=123", and the same
// for "full"): the totals, in microseconds. The "some" line is required.
func parsePressure(r io.Reader) (Pressure, error) {
	var p Pressure
	var some bool
	s := bufio.NewScanner(r)
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) == 0 {
			continue
		}
		if f[0] != "some" && f[0] != "full" {
			continue // a later kernel's line
		}
		var total time.Duration
		found := false
		for _, kv := range f[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return Pressure{}, fmt.Errorf("%w: %q", ErrInvalidFormat, s.Text())
			}
			if k == "total" {
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					return Pressure{}, fmt.Errorf("%w: %q", ErrInvalidFormat, s.Text())
				}
				total, found = time.Duration(n)*time.Microsecond, true
			}
		}
		if !found {
			return Pressure{}, fmt.Errorf("%w: no total in %q", ErrInvalidFormat, s.Text())
		}
		if f[0] == "some" {
			p.Some, some = total, true
		} else {
			p.Full, p.HasFull = total, true
		}
	}
	if err := s.Err(); err != nil {
		return Pressure{}, err
	}
	if !some {
		return Pressure{}, fmt.Errorf("%w: no \"some\" line", ErrInvalidFormat)
	}
	return p, nil
}

// MachineCPU is the machine's CPU time from /proc/stat: the busy time summed over every CPU,
// and how many CPUs are online.
type MachineCPU struct {
	// Busy is user, nice, system, irq, softirq and steal time of the "cpu" line (guest time is
	// part of user and nice already; idle and iowait are not busy). Its resolution is one tick
	// per CPU (see ClockTicks).
	Busy time.Duration
	// Online is the number of "cpuN" lines: the CPUs online now.
	Online int
	// PerCPU is the busy time of each online CPU, by number, as Busy is
	// of them all.
	PerCPU map[int]time.Duration
}

// ReadMachineCPU reads /proc/stat.
func ReadMachineCPU() (MachineCPU, error) {
	f, err := os.Open(procStatFile)
	if err != nil {
		return MachineCPU{}, err
	}
	defer f.Close()
	m, err := parseProcStat(f, ClockTicks())
	if err != nil {
		return MachineCPU{}, fmt.Errorf("%s: %w", procStatFile, err)
	}
	return m, nil
}

// parseProcStat parses /proc/stat, whose times are in ticks of 1/hz seconds.
func parseProcStat(r io.Reader, hz int64) (MachineCPU, error) {
	if hz <= 0 {
		return MachineCPU{}, fmt.Errorf("%w: clock ticks per second %d", ErrInvalidFormat, hz)
	}
	m := MachineCPU{PerCPU: map[int]time.Duration{}}
	var total bool
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 64*1024), 1024*1024) // the intr line is long
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) == 0 || !strings.HasPrefix(f[0], "cpu") {
			continue
		}
		cpu := -1
		if f[0] != "cpu" {
			n, err := strconv.Atoi(f[0][3:])
			if err != nil {
				continue
			}
			cpu = n
		}
		busy, err := busyTime(f, hz)
		if err != nil {
			return MachineCPU{}, fmt.Errorf("%w: %q", err, s.Text())
		}
		if cpu >= 0 {
			m.Online++
			m.PerCPU[cpu] = busy
			continue
		}
		m.Busy = busy
		total = true
	}
	if err := s.Err(); err != nil {
		return MachineCPU{}, err
	}
	if !total {
		return MachineCPU{}, fmt.Errorf("%w: no \"cpu\" line", ErrInvalidFormat)
	}
	return m, nil
}

// busyTime is the busy time of one cpu line of /proc/stat: user, nice,
// system, irq, softirq and steal.
func busyTime(f []string, hz int64) (time.Duration, error) {
	// cpu user nice system idle iowait irq softirq steal guest guest_nice
	if len(f) < 8 {
		return 0, ErrInvalidFormat
	}
	var ticks uint64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		if i >= len(f) {
			continue // steal: since Linux 2.6.11
		}
		n, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, ErrInvalidFormat
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / time.Duration(hz)), nil
}

// atClkTck is AT_CLKTCK, the auxiliary vector entry that holds USER_HZ.
const atClkTck = 17

// ClockTicks is sysconf(_SC_CLK_TCK), the unit of /proc/stat's times (USER_HZ): the kernel's
// AT_CLKTCK entry of the auxiliary vector, as the C library reads it, or 100 without one.
func ClockTicks() int64 {
	if aux, err := unix.Auxv(); err == nil {
		for _, kv := range aux {
			if kv[0] == atClkTck && kv[1] > 0 {
				return int64(kv[1])
			}
		}
	}
	return 100
}
