package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perflock/perflock/proto"
)

func TestFormatReport(t *testing.T) {
	busy, full := int64(2_000_000), int64(1_000)
	r := &proto.Report{Job: "x-42", Driver: "cgroupfs", Policy: "freeze", WallUS: 1_500_000, OnlineCPUs: 2, MachineBusyUS: &busy,
		JobCPU:      &proto.ReportCPU{TotalUS: 1_400_000, UserUS: 1_300_000, SystemUS: 100_000},
		Outside:     &proto.ReportOutside{CPUUS: 600_000, Share: 0.2},
		Pressure:    &proto.ReportPressure{SomeUS: 12_000, FullUS: &full},
		Shared:      &proto.ReportShared{FrozenJobs: 2, CPUUS: 3_000, FrozenThroughout: false},
		Unavailable: map[string]string{"throttling": "no cpu\x1b[2J controller"}}
	got := FormatReport("perfrun", r)
	want := `perfrun: report for x-42 (driver cgroupfs, policy freeze)
  wall time         1.500s
  job CPU           1.400s (user 1.300s, system 0.100s)
  outside the job   0.600s CPU, 20.0% of 2 CPUs × 1.500s
  machine busy      2.000s CPU, 66.7% of 2 CPUs × 1.500s
  CPU pressure      some 0.012s, full 0.001s
  throttling        not available: no cpu?[2J controller
  shared jobs       2 frozen at the start; 0.003s CPU during the run: NOT frozen throughout (thawed by hand, or a failed freeze)
`
	if got != want {
		t.Fatalf("FormatReport:\n%s\nwant:\n%s", got, want)
	}
	none := FormatReport("perfrun", &proto.Report{Job: "x-1", Driver: "none", Policy: "drain", Unavailable: map[string]string{"all": "the job was never placed"}})
	if strings.Count(none, "not available: the job was never placed") != 6 {
		t.Fatalf("a report with nothing measured:\n%s", none)
	}
}

// Run asks for a report and prints it, as JSON on one line, after the
// job's own output; the exit status stays the job's.
func TestRunPrintsTheReportAfterTheJob(t *testing.T) {
	sock := startTestDaemon(t)
	code, stderr := runJob(t, Options{Socket: sock, Report: ReportJSON}, "sh", "-c", "echo job-output >&2; exit 3")
	if code != 3 {
		t.Fatalf("status %d, want 3: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if len(lines) != 2 || lines[0] != "job-output" {
		t.Fatalf("stderr %q: want the job's line, then the report", stderr)
	}
	var r proto.Report
	if err := json.Unmarshal([]byte(lines[1]), &r); err != nil || r.Driver != "none" || r.Unavailable["job_cpu"] == "" {
		t.Fatalf("report %q: %+v, %v", lines[1], r, err)
	}
}

// A daemon that never answers done with a report (an older one): perfrun
// gives up after reportWait, says so, and exits with the job's status.
func TestRunGivesUpOnAReportThatDoesNotCome(t *testing.T) {
	old := reportWait
	reportWait = 200 * time.Millisecond
	t.Cleanup(func() { reportWait = old })
	sock := filepath.Join(t.TempDir(), SocketName)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	served := make(chan error, 1)
	go func() { served <- silentDaemon(ln) }()
	code, stderr := runJob(t, Options{Socket: sock, Report: ReportText}, "sh", "-c", "exit 4")
	if code != 4 || !strings.Contains(stderr, "run report unavailable: perflockd sent none within 200ms") {
		t.Fatalf("status %d, stderr %q", code, stderr)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// silentDaemon serves one client as a daemon without run reports would:
// hello, granted, placed, and nothing after done.
func silentDaemon(ln net.Listener) error {
	nc, err := ln.Accept()
	if err != nil {
		return err
	}
	defer nc.Close()
	r := proto.NewReader(nc)
	for _, step := range []struct{ want, reply string }{
		{proto.THello, proto.THello}, {proto.TAcquire, proto.TGranted}, {proto.TPlace, proto.TPlaced}, {proto.TDone, ""},
	} {
		m, err := r.Read()
		if err != nil {
			return err
		}
		if m.Type != step.want {
			return fmt.Errorf("expected %s, got %s", step.want, m.Type)
		}
		if m.Type == proto.TAcquire && !m.Report {
			return errors.New("acquire without report")
		}
		if step.reply != "" {
			if err := proto.Write(nc, proto.Msg{Type: step.reply, Version: proto.Version, Driver: "none", Policy: "drain", Job: "x-1"}); err != nil {
				return err
			}
		}
	}
	if _, err := r.Read(); !errors.Is(err, io.EOF) { // the client closes
		return fmt.Errorf("after done: %v, want the client to close", err)
	}
	return nil
}
