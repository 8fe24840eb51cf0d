package main

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary play the bench's helpers, as the bench
// program re-executes itself.
func TestMain(m *testing.M) {
	if ok, err := helperMain(os.Args[1:]); ok {
		if err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestChaseRingVisitsEveryLineOncePerCycle(t *testing.T) {
	ring := chaseRing(1)
	lines := len(ring) / 16
	seen := make([]bool, lines)
	at := uint32(0)
	for i := range lines {
		if at%16 != 0 {
			t.Fatalf("step %d lands inside a line (%d)", i, at)
		}
		if seen[at/16] {
			t.Fatalf("line %d visited twice within one cycle (step %d of %d)", at/16, i, lines)
		}
		seen[at/16] = true
		at = ring[at]
	}
	if at != 0 {
		t.Fatalf("after %d steps the chase is at %d, not back at the start", lines, at)
	}
}

func TestWorkloadsReportTheirStartAndTheirWork(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{modeWork, "1", "1000"},
		{modeStream, "2", "1", "2"},
		{modeChase, "1", "1000"},
	} {
		file := filepath.Join(dir, args[0])
		before := monoNS()
		if ok, err := helperMain(append(args, file)); !ok || err != nil {
			t.Fatalf("%v: %v %v", args, ok, err)
		}
		start, ns, err := readWork(file)
		if err != nil || ns <= 0 || start < before || start > monoNS() {
			t.Errorf("%v wrote start %d (began after %d), %d ns, %v", args, start, before, ns, err)
		}
	}
	if ok, err := helperMain([]string{modeStream, "0", "1", "1", filepath.Join(dir, "x")}); !ok || err == nil {
		t.Error("zero threads accepted")
	}
}

// A hog under SCHED_IDLE says it runs once every one of its threads is
// SCHED_IDLE.
func TestMemHogSaysReadyUnderSchedIdle(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ready")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd := exec.Command(os.Args[0], modeMemHog, "4", "0", "idle")
	cmd.Env = append(os.Environ(), envReady+"="+sock)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	select {
	case err := <-accepted:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the hog never said it runs")
	}
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/task/" + task.Name() + "/stat")
		if err != nil {
			continue // a thread that ended
		}
		// Fields after the command's closing parenthesis; policy is field 41.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 39 || f[38] != "5" {
			t.Errorf("thread %s has policy %v, want 5 (SCHED_IDLE)", task.Name(), f[38:39])
		}
	}
}

func TestPickNamesKeepsThePageOrder(t *testing.T) {
	got, err := pickNames("x", "shield, plain,plain", isoBackgroundNames, nil)
	if err != nil || strings.Join(got, ",") != "plain,shield" {
		t.Errorf("got %v, %v", got, err)
	}
	if got, _ := pickNames("x", "", isoBackgroundNames, isoDefaultBackgrounds); strings.Join(got, ",") != strings.Join(isoDefaultBackgrounds, ",") {
		t.Errorf("default: %v", got)
	}
	if got, _ := pickNames("x", "all", isoBackgroundNames, nil); len(got) != len(isoBackgroundNames) {
		t.Errorf("all: %v", got)
	}
	if _, err := pickNames("x", "nice,bogus", isoBackgroundNames, nil); err == nil {
		t.Error("an unknown name was accepted")
	}
}

func TestRefusalReasonIsPerflockdsLastWord(t *testing.T) {
	for out, want := range map[string]string{
		"perflockd: unknown flag: --shield\nRun 'perflockd --help' for usage.\n":                                       "unknown flag: --shield",
		"time=… level=INFO msg=starting\nperflockd: --shield: the cgroup2 tree offers no cpuset controller (hybrid)\n": "--shield: the cgroup2 tree offers no cpuset controller (hybrid)",
		"": "no reason given",
	} {
		if got := refusalReason(out); got != want {
			t.Errorf("refusalReason(%q) = %q, want %q", out, got, want)
		}
	}
	var err error = &refusal{reason: "x"}
	if !errors.Is(err, errRefused) {
		t.Error("a refusal is not errRefused")
	}
}

func TestNoShieldIsReadFromTheDaemonsLog(t *testing.T) {
	log := `time=2026-11-30T22:00:00Z level=WARN msg="--shield: no shield on this machine; exclusive jobs run unshielded" why="shield: cgroupfs: the cgroup2 hierarchy at /sys/fs/cgroup/unified offers no cpuset controller (a \"hybrid\" setup?)"` + "\n"
	why, ok := noShield(log)
	if !ok || why != `no shield: shield: cgroupfs: the cgroup2 hierarchy at /sys/fs/cgroup/unified offers no cpuset controller (a "hybrid" setup?)` {
		t.Fatalf("noShield = %q, %v", why, ok)
	}
	if _, ok := noShield("level=INFO msg=\"shield ready\"\n"); ok {
		t.Fatal("a shield that is ready read as none")
	}
}
