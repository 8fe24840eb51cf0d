package runner

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/perflock/perflock/proto"
)

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second:                  "0s",
		0:                             "0s",
		999 * time.Millisecond:        "0s",
		3 * time.Second:               "3s",
		130 * time.Second:             "2m10s",
		time.Hour + 2*time.Minute + 9: "1h02m",
		27 * time.Hour:                "1d03h",
	} {
		if got := HumanDuration(d); got != want {
			t.Errorf("HumanDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestStatusLineNamesPositionAndHolder(t *testing.T) {
	now := time.Now()
	st := WaitState{
		Position: 2,
		Holders:  []proto.Holder{{User: "alice", Mode: "exclusive", Command: "make bench", HeldMS: 125000}},
		Reported: now.Add(-5 * time.Second),
	}
	got := StatusLine("perfrun", "the machine", st, now)
	want := "perfrun: waiting for the machine: position 2 in line; held by alice (exclusive: make bench) for 2m10s"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestStatusLineSeveralHoldersFrozenAndNoPosition(t *testing.T) {
	st := WaitState{Holders: []proto.Holder{
		{User: "bob", Mode: "shared", Command: "make -j8", HeldMS: 3000, Frozen: true},
		{User: "carol", Mode: "shared", Command: "x"},
		{User: "dave", Mode: "shared", Command: "y"},
	}}
	got := StatusLine("pls", "cpu, gpu", st, st.Reported)
	want := "pls: waiting for cpu, gpu: held by bob (shared, frozen: make -j8) for 3s, and 2 more"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestStatusLineNeutralisesTerminalEscapes(t *testing.T) {
	st := WaitState{Position: 1, Holders: []proto.Holder{{User: "eve", Mode: "shared", Command: "x\x1b]0;pwned\x07\ny"}}}
	got := StatusLine("perfrun", "the machine", st, st.Reported)
	if strings.ContainsAny(got, "\x1b\x07\n") {
		t.Errorf("control characters passed through: %q", got)
	}
}

func TestResourcesName(t *testing.T) {
	for _, c := range []struct {
		res  []string
		want string
	}{{nil, "the machine"}, {[]string{"cpu"}, "the machine"}, {[]string{"gpu0", "cpu"}, "gpu0, cpu"}} {
		if got := resourcesName(c.res); got != c.want {
			t.Errorf("resourcesName(%q) = %q, want %q", c.res, got, c.want)
		}
	}
}

func TestExitStatusPassesCodeAndMapsSignals(t *testing.T) {
	for _, c := range []struct {
		ws   syscall.WaitStatus
		want int
	}{
		{0, 0},
		{3 << 8, 3},
		{255 << 8, 255},
		{syscall.WaitStatus(syscall.SIGKILL), 137},
		{syscall.WaitStatus(syscall.SIGINT), 130},
		{syscall.WaitStatus(syscall.SIGSEGV) | 0x80, 139}, // with core dump
	} {
		if got := ExitStatus(c.ws); got != c.want {
			t.Errorf("ExitStatus(%#x) = %d, want %d", uint32(c.ws), got, c.want)
		}
	}
	if ExitSignal(syscall.SIGTERM) != 143 {
		t.Errorf("ExitSignal(SIGTERM) = %d", ExitSignal(syscall.SIGTERM))
	}
}

func TestListingCommandFitsInOneMessage(t *testing.T) {
	long := strings.Repeat("\x01", 10000) // escapes to 6 bytes each in JSON
	argv := []string{"cmd"}
	for range 400 {
		argv = append(argv, long)
	}
	got := listingCommand(argv)
	if len(got) > proto.MaxArgs {
		t.Fatalf("%d words", len(got))
	}
	m := proto.Msg{Type: proto.TAcquire, Mode: "exclusive", Command: got}
	if _, err := proto.Encode(m); err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	if got[0] != "cmd" {
		t.Errorf("first word %q", got[0])
	}
	if short := listingCommand([]string{"make", "bench"}); strings.Join(short, " ") != "make bench" {
		t.Errorf("short command changed: %q", short)
	}
}

func TestCutUTF8KeepsWholeCharacters(t *testing.T) {
	if got := cutUTF8("aé", 2); got != "a" {
		t.Errorf("got %q", got)
	}
	if got := cutUTF8("aé", 3); got != "aé" {
		t.Errorf("got %q", got)
	}
}
