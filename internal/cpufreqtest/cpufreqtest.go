// Package cpufreqtest builds fake cpufreq sysfs trees for tests: folders
// cpuN/cpufreq with the attributes package governor reads and writes, in a
// temporary folder that a daemon can be pointed at (perflockd
// --cpufreq-root).
package cpufreqtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The fake CPUs' hardware range and their settings before any pin.
const (
	HWMax = "3500000" // cpuinfo_max_freq, kHz
	HWMin = "400000"  // cpuinfo_min_freq, kHz
	// Original is Settings of a fresh CPU: schedutil between 800 MHz and 3 GHz.
	Original = "schedutil 800000-3000000"
)

// Tree is a fake cpufreq tree rooted at Root (what DefaultSysfs is on a
// real machine).
type Tree struct {
	t    testing.TB
	Root string
}

// New makes n CPUs under root running schedutil between 800 MHz and 3 GHz
// (Original), each offering every usual governor; avail, when not empty,
// is their scaling_available_frequencies. It adds the folders cpufreq and
// cpuidle, which are not CPUs. n = 0 makes a tree with no cpufreq at all.
func New(t testing.TB, root string, n int, avail string) *Tree {
	t.Helper()
	f := &Tree{t: t, Root: root}
	for i := range n {
		attrs := map[string]string{
			"scaling_governor":            "schedutil",
			"scaling_min_freq":            "800000",
			"scaling_max_freq":            "3000000",
			"cpuinfo_max_freq":            HWMax,
			"cpuinfo_min_freq":            HWMin,
			"scaling_available_governors": "conservative ondemand userspace powersave performance schedutil",
		}
		if avail != "" {
			attrs["scaling_available_frequencies"] = avail
		}
		f.MkCPU(i, attrs)
	}
	for _, d := range []string{"cpufreq", "cpuidle"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// MkCPU makes cpuI/cpufreq with the given attributes.
func (f *Tree) MkCPU(i int, attrs map[string]string) {
	f.t.Helper()
	dir := filepath.Join(f.Root, fmt.Sprintf("cpu%d", i), "cpufreq")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.t.Fatal(err)
	}
	for k, v := range attrs {
		f.Set(i, k, v)
	}
}

// Path is the file of one attribute of one CPU.
func (f *Tree) Path(cpu int, attr string) string {
	return filepath.Join(f.Root, fmt.Sprintf("cpu%d", cpu), "cpufreq", attr)
}

// Set writes one attribute, as the kernel would show it.
func (f *Tree) Set(cpu int, attr, value string) {
	f.t.Helper()
	if err := os.WriteFile(f.Path(cpu, attr), []byte(value+"\n"), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// Get reads one attribute.
func (f *Tree) Get(cpu int, attr string) string {
	f.t.Helper()
	b, err := os.ReadFile(f.Path(cpu, attr))
	if err != nil {
		f.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// Settings is one CPU's governor, minimum and maximum, as in Original.
func (f *Tree) Settings(cpu int) string {
	return f.Get(cpu, "scaling_governor") + " " + f.Get(cpu, "scaling_min_freq") + "-" + f.Get(cpu, "scaling_max_freq")
}

// All is Settings of CPUs 0 to n-1 when they agree, else every CPU's,
// separated by "; ".
func (f *Tree) All(n int) string {
	if n <= 0 {
		return ""
	}
	var s []string
	for i := range n {
		s = append(s, f.Settings(i))
	}
	for _, x := range s[1:] {
		if x != s[0] {
			return strings.Join(s, "; ")
		}
	}
	return s[0]
}

// WantAll fails the test unless CPUs 0 to n-1 all have settings want.
func (f *Tree) WantAll(n int, want string) {
	f.t.Helper()
	for i := range n {
		if got := f.Settings(i); got != want {
			f.t.Errorf("cpu%d: %s, want %s", i, got, want)
		}
	}
}
