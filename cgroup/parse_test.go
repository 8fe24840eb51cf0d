package cgroup

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3/cgroup2/stats"
)

func TestParseEvents(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    events
		wantErr bool
	}{
		{name: "populated and frozen", in: "populated 1\nfrozen 1\n", want: events{Populated: true, Frozen: true}},
		{name: "empty and thawed", in: "populated 0\nfrozen 0\n", want: events{}},
		{name: "kernel before 5.2 has no frozen key", in: "populated 1\n", want: events{Populated: true}},
		{name: "unknown keys are ignored", in: "populated 0\nfrozen 1\nfuture 7\n", want: events{Frozen: true}},
		{name: "blank lines are skipped", in: "\npopulated 1\n\n", want: events{Populated: true}},
		{name: "populated is required", in: "frozen 1\n", wantErr: true},
		{name: "value must be a number", in: "populated yes\n", wantErr: true},
		{name: "one value per key", in: "populated 1 2\n", wantErr: true},
		{name: "empty file", in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseEvents(strings.NewReader(tt.in))
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidFormat) {
					t.Fatalf("parseEvents(%q) error = %v, want ErrInvalidFormat", tt.in, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseEvents(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseCPUStat(t *testing.T) {
	in := "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\nnr_throttled 0\nthrottled_usec 20\nnr_bursts 0\nburst_usec 0\n"
	st, err := parseCPUStat(strings.NewReader(in))
	got := st.Stat
	want := Stat{CPU: 1500 * time.Microsecond, User: time.Millisecond, System: 500 * time.Microsecond, Throttled: 20 * time.Microsecond}
	if err != nil || got != want {
		t.Fatalf("parseCPUStat = %+v, %v; want %+v", got, err, want)
	}
	// Without the cpu controller only the first keys exist.
	st, err = parseCPUStat(strings.NewReader("usage_usec 3\nuser_usec 2\nsystem_usec 1\nnice_usec 0\n"))
	got = st.Stat
	want = Stat{CPU: 3 * time.Microsecond, User: 2 * time.Microsecond, System: time.Microsecond}
	if err != nil || got != want {
		t.Fatalf("parseCPUStat without cpu controller = %+v, %v; want %+v", got, err, want)
	}
	if _, err := parseCPUStat(strings.NewReader("usage_usec -1\n")); !errors.Is(err, ErrInvalidFormat) {
		t.Fatalf("parseCPUStat(negative) error = %v, want ErrInvalidFormat", err)
	}
}

func TestParsePids(t *testing.T) {
	got, err := parsePids(strings.NewReader("12\n345\n\n6\n"))
	if err != nil || !slices.Equal(got, []int{12, 345, 6}) {
		t.Fatalf("parsePids = %v, %v; want [12 345 6]", got, err)
	}
	got, err = parsePids(strings.NewReader(""))
	if err != nil || len(got) != 0 {
		t.Fatalf("parsePids(empty) = %v, %v; want none", got, err)
	}
	for _, bad := range []string{"x\n", "0\n", "-3\n", "1 2\n"} {
		if _, err := parsePids(strings.NewReader(bad)); !errors.Is(err, ErrInvalidFormat) {
			t.Errorf("parsePids(%q) error = %v, want ErrInvalidFormat", bad, err)
		}
	}
}

const (
	unifiedMountinfo = `22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
25 22 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:3 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`
	hybridMountinfo = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	legacyMountinfo = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
`
	// Optional fields (shared:, master:) vary in number; the mount point has an escaped space.
	customMountinfo = `22 1 0:21 / / rw,relatime shared:1 master:4 - ext4 /dev/vda rw
90 22 0:50 / /run/my\040cgroups rw,relatime shared:9 master:7 - cgroup2 none rw
`
	// A second cgroup2 mount must not win over the standard one, whatever the order.
	twoMountinfo = `90 22 0:50 / /mnt/other rw - cgroup2 none rw
26 25 0:24 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
`
)

func TestParseMountinfo(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"unified", unifiedMountinfo, "/sys/fs/cgroup"},
		{"hybrid", hybridMountinfo, "/sys/fs/cgroup/unified"},
		{"custom location with escaped space", customMountinfo, "/run/my cgroups"},
		{"standard location preferred", twoMountinfo, "/sys/fs/cgroup"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMountinfo(strings.NewReader(tt.in))
			if err != nil || got != tt.want {
				t.Fatalf("parseMountinfo = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	if got, err := parseMountinfo(strings.NewReader(legacyMountinfo)); !errors.Is(err, ErrNoCgroup2) {
		t.Fatalf("parseMountinfo(legacy) = %q, %v; want ErrNoCgroup2", got, err)
	}
}

func TestOpenRejectsInvalidNames(t *testing.T) {
	// The last is refused by containerd/cgroups, whose group paths must not look like file paths.
	for _, name := range []string{"", "/perflock", "../perflock", "a/../../b", "perflock/", "a//b", ".", "sys/fs/cgroup/perflock"} {
		if _, err := Open(t.TempDir(), name); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Open(_, %q) error = %v, want ErrInvalidName", name, err)
		}
	}
}

func TestOpenRejectsDirectoryThatIsNotCgroup2(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(dir, "perflock"); !errors.Is(err, ErrNoCgroup2) {
		t.Fatalf("Open(%s) error = %v, want ErrNoCgroup2", dir, err)
	}
}

func TestStatFromMetrics(t *testing.T) {
	for _, m := range []*stats.Metrics{nil, {}, {CPU: &stats.CPUStat{}}} {
		if s, ok := statFromMetrics(m); ok {
			t.Errorf("statFromMetrics(%v) = %+v, true; want nothing reported", m, s)
		}
	}
	m := &stats.Metrics{CPU: &stats.CPUStat{UsageUsec: 1500, UserUsec: 1000, SystemUsec: 500, ThrottledUsec: 20, NrPeriods: 3}}
	want := Stat{CPU: 1500 * time.Microsecond, User: time.Millisecond, System: 500 * time.Microsecond, Throttled: 20 * time.Microsecond}
	if s, ok := statFromMetrics(m); !ok || s != want {
		t.Fatalf("statFromMetrics = %+v, %v; want %+v", s, ok, want)
	}
}
