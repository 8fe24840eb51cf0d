package cgroup

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// events is the content of a cgroup.events file.
type events struct {
	Populated bool // some process lives in the cgroup or a descendant
	Frozen    bool // the cgroup and all its descendants are frozen
}

// parseKeyed parses a flat-keyed cgroup file ("key value" per line, as in cgroup.events and
// cpu.stat). Blank lines are skipped; any other line that is not a key and an unsigned integer is
// ErrInvalidFormat.
func parseKeyed(r io.Reader) (map[string]uint64, error) {
	m := make(map[string]uint64)
	s := bufio.NewScanner(r)
	for s.Scan() {
		line := s.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("%w: line %q", ErrInvalidFormat, line)
		}
		v, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: line %q", ErrInvalidFormat, line)
		}
		m[f[0]] = v
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	return m, nil
}

// parseEvents parses cgroup.events. The "populated" key is required; "frozen" is absent before
// Linux 5.2 and then reads as false. Unknown keys are ignored.
func parseEvents(r io.Reader) (events, error) {
	m, err := parseKeyed(r)
	if err != nil {
		return events{}, err
	}
	p, ok := m["populated"]
	if !ok {
		return events{}, fmt.Errorf("%w: no \"populated\" key", ErrInvalidFormat)
	}
	return events{Populated: p != 0, Frozen: m["frozen"] != 0}, nil
}

// Stat is a job's resource usage, from its cpu.stat.
type Stat struct {
	CPU    time.Duration // usage_usec: CPU time used by all processes, past and present
	User   time.Duration // user_usec
	System time.Duration // system_usec
	// Throttled is throttled_usec: time held back by a CPU quota. Zero without the cpu controller.
	Throttled time.Duration
}

// parsePids parses cgroup.procs: one decimal pid per line.
func parsePids(r io.Reader) ([]int, error) {
	var pids []int
	s := bufio.NewScanner(r)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" {
			continue
		}
		pid, err := strconv.Atoi(line)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("%w: pid %q", ErrInvalidFormat, line)
		}
		pids = append(pids, pid)
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	return pids, nil
}

// Standard cgroup2 mount points, in order of preference: unified mode, then hybrid mode.
var preferredMounts = [...]string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}

// parseMountinfo returns the cgroup2 mount point listed in r (the format of /proc/self/mountinfo):
// /sys/fs/cgroup if cgroup2 is mounted there, else /sys/fs/cgroup/unified, else the first cgroup2
// mount listed. It returns ErrNoCgroup2 if there is none.
func parseMountinfo(r io.Reader) (string, error) {
	var found []string
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for s.Scan() {
		// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue":
		// the mount point is field 5; the file system type follows the "-" separator.
		pre, post, ok := strings.Cut(s.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 1 || qf[0] != "cgroup2" {
			continue
		}
		found = append(found, unescapeMountinfo(pf[4]))
	}
	if err := s.Err(); err != nil {
		return "", err
	}
	for _, want := range preferredMounts {
		for _, m := range found {
			if m == want {
				return m, nil
			}
		}
	}
	if len(found) > 0 {
		return found[0], nil
	}
	return "", ErrNoCgroup2
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for space, \011, \012, \134).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
