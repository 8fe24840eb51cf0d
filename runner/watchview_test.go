package runner

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/perflock/perflock/proto"
)

// watchSnapshot is a busy queue with long commands, as received at rx.
func watchSnapshot(rx time.Time) Snapshot {
	long := []string{"./run-benchmarks", "--suite=all", "--iterations=1000", "--output=/home/alexandra/results/" + strings.Repeat("r", 80)}
	return Snapshot{
		Driver: "cgroupfs", Policy: "freeze", Received: rx,
		Entries: []proto.Entry{
			{Job: "s-3", State: "frozen", Mode: "shared", User: "bob", PID: 31337, ForMS: 3_600_000, Where: "/perflock/shared/s-3", Command: []string{"make", "-j64", "world"}},
			{Job: "x-12", State: "running", Mode: "exclusive", User: "alexandra", PID: 4242, ForMS: 130_000, Where: "/perflock/exclusive/x-12", Command: long},
			{Job: "x-13", State: "waiting", Mode: "group(42)", User: "carol", PID: 999999, Position: 1, ForMS: 5_000, Command: long},
			{Job: "s-14", State: "waiting", Mode: "shared", User: "dave", PID: 77, Position: 2, ForMS: 0, Command: []string{"sh", "-c", "while :; do date; done"}},
		},
	}
}

// The watch screen in 80 columns: the header with the driver, policy,
// counts and the time at the right edge; the table with every job's time
// advanced since the listing arrived, WHERE cut at its start and COMMAND at
// its end so that no line is wider than 80.
func TestWatchScreenFitsEightyColumns(t *testing.T) {
	rx := time.Date(2026, 3, 1, 14, 2, 0, 0, time.Local)
	now := rx.Add(65 * time.Second)
	got := strings.Join(WatchScreen(watchSnapshot(rx), now, 80, 0), "\n") + "\n"
	want := "" +
		"perflockd cgroupfs/freeze: 1 running, 1 frozen, 2 waiting               14:03:05\n" +
		"STATE    MODE       USER       PID     TIME   WHERE         COMMAND\n" +
		"frozen   shared     bob        31337   1h01m  …/shared/s-3  make -j64 world\n" +
		"running  exclusive  alexandra  4242    3m15s  …lusive/x-12  ./run-benchmarks --…\n" +
		"waiting  group(42)  carol      999999  1m10s  -             ./run-benchmarks --…\n" +
		"waiting  shared     dave       77      1m05s  -             sh -c while :; do d…\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	for _, l := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
		if n := utf8.RuneCountInString(l); n > 80 {
			t.Errorf("line of %d columns: %q", n, l)
		}
	}
}

// A queue taller than the screen ends with a line that says how many jobs
// are not shown; the header stays.
func TestWatchScreenFitsTheHeight(t *testing.T) {
	rx := time.Date(2026, 3, 1, 14, 2, 0, 0, time.Local)
	lines := WatchScreen(watchSnapshot(rx), rx, 80, 4)
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "perflockd cgroupfs/freeze:") || !strings.HasPrefix(lines[1], "STATE") ||
		!strings.HasPrefix(lines[2], "frozen") || lines[3] != "… 3 more (wholock lists them all)" {
		t.Errorf("4 rows: %q", lines)
	}
	if lines := WatchScreen(watchSnapshot(rx), rx, 80, 1); len(lines) != 1 || !strings.HasPrefix(lines[0], "perflockd") {
		t.Errorf("1 row: %q", lines)
	}
}

// While the daemon is lost, the header says so (cut to the width) and no
// table is shown; an empty queue reads "no jobs".
func TestWatchScreenLostAndEmpty(t *testing.T) {
	now := time.Date(2026, 3, 1, 9, 5, 7, 0, time.Local)
	lost := WatchScreen(Snapshot{Lost: errors.New("perflockd closed the connection" + strings.Repeat(" and more", 20))}, now, 80, 24)
	if len(lost) != 1 || !strings.HasPrefix(lost[0], "perflockd unreachable, retrying every second: perflockd closed") ||
		!strings.HasSuffix(lost[0], "…  09:05:07") || utf8.RuneCountInString(lost[0]) != 80 {
		t.Errorf("lost: %q", lost)
	}
	empty := WatchScreen(Snapshot{Entries: []proto.Entry{}, Driver: "none", Policy: "drain", Received: now}, now, 0, 0)
	if strings.Join(empty, "\n") != "perflockd none/drain: 0 running, 0 frozen, 0 waiting  09:05:07\nno jobs" {
		t.Errorf("empty: %q", empty)
	}
}
