package runner

import (
	"strings"
	"testing"

	"github.com/perflock/perflock/proto"
)

func TestWriteTableEmptyQueue(t *testing.T) {
	var b strings.Builder
	if err := WriteTable(&b, nil, 80); err != nil {
		t.Fatal(err)
	}
	if b.String() != "no jobs\n" {
		t.Errorf("got %q", b.String())
	}
}

func TestWriteTableRowsInQueueOrder(t *testing.T) {
	entries := []proto.Entry{
		{State: "running", Mode: "exclusive", User: "alice", PID: 4242, ForMS: 130000, Where: "/perflock/exclusive/x-7", Command: []string{"make", "bench"}},
		{State: "waiting", Mode: "shared", User: "bob", PID: 17, ForMS: 3000, Position: 1, Command: []string{"make", "-j8", strings.Repeat("x", 100)}},
	}
	var b strings.Builder
	if err := WriteTable(&b, entries, 80); err != nil {
		t.Fatal(err)
	}
	// WHERE gives up its start so that COMMAND gets 20 columns.
	want := "" +
		"STATE    MODE       USER   PID   TIME   WHERE               COMMAND\n" +
		"running  exclusive  alice  4242  2m10s  …ock/exclusive/x-7  make bench\n" +
		"waiting  shared     bob    17    3s     -                   make -j8 xxxxxxxxxx…\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	for _, line := range strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n") {
		if n := len([]rune(line)); n > 80 {
			t.Errorf("line of %d columns: %q", n, line)
		}
	}
}

func TestWriteTableWithoutWidthKeepsWholeCommand(t *testing.T) {
	long := strings.Repeat("y", 200)
	var b strings.Builder
	if err := WriteTable(&b, []proto.Entry{{State: "waiting", Command: []string{long}}}, 0); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), long) {
		t.Errorf("command cut without a width: %q", b.String())
	}
}

func TestWriteTableShowsTheGovernorInMode(t *testing.T) {
	var b strings.Builder
	entries := []proto.Entry{{State: "running", Mode: "exclusive", Governor: "70%", User: "ana", Command: []string{"./bench"}}}
	if err := WriteTable(&b, entries, 0); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "running  exclusive (70%)  ana") {
		t.Errorf("got %q", b.String())
	}
}
