package runner

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/perflock/perflock/internal/cmdline"
	"github.com/perflock/perflock/proto"
)

// HumanDuration formats d for people, to at most two units: "0s", "3s",
// "2m10s", "1h02m", "3d04h".
func HumanDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%02dh", s/86400, s%86400/3600)
}

// friendlyDuration is HumanDuration for whole seconds, else Go's notation
// ("250ms", "2.5s"), so that a timeout reads as it was given.
func friendlyDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return HumanDuration(d)
	}
	return d.String()
}

// printable replaces control and other non-printable characters in s, which
// may come from another user, so that it cannot drive the terminal.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
}

// describeHolder is "alice (exclusive: make bench) for 2m10s", the holding
// time advanced by age (the time since the daemon reported it).
func describeHolder(h proto.Holder, age time.Duration) string {
	mode := printable(h.Mode)
	if h.Frozen {
		mode += ", frozen"
	}
	held := time.Duration(h.HeldMS)*time.Millisecond + age
	return fmt.Sprintf("%s (%s: %s) for %s", printable(h.User), mode, cmdline.Truncate(printable(h.Command), 40), HumanDuration(held))
}

// describeHolders names up to max holders, then "and N more".
func describeHolders(hs []proto.Holder, age time.Duration, max int) string {
	if len(hs) == 0 {
		return ""
	}
	var parts []string
	for i, h := range hs {
		if i == max {
			parts = append(parts, fmt.Sprintf("and %d more", len(hs)-max))
			break
		}
		parts = append(parts, describeHolder(h, age))
	}
	return strings.Join(parts, ", ")
}

// WaitState is what a waiting client knows, for its status line.
type WaitState struct {
	Position int            // in line, from 1; 0 if unknown
	Holders  []proto.Holder // as last reported
	Reported time.Time      // when Position and Holders were reported
}

// StatusLine is the one-line waiting status, e.g.
// "perfrun: waiting for the machine: position 2 in line; held by alice
// (exclusive: make bench) for 2m10s". what names the resources ("the
// machine"). Holding times advance with now.
func StatusLine(prog, what string, st WaitState, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: waiting for %s", prog, what)
	if st.Position > 0 {
		fmt.Fprintf(&b, ": position %d in line", st.Position)
	}
	if h := describeHolders(st.Holders, now.Sub(st.Reported), 1); h != "" {
		if st.Position > 0 {
			b.WriteString("; held by ")
		} else {
			b.WriteString(": held by ")
		}
		b.WriteString(h)
	}
	return b.String()
}

// resourcesName is how messages name what a request waits for.
func resourcesName(res []string) string {
	if len(res) == 0 || len(res) == 1 && res[0] == "cpu" {
		return "the machine"
	}
	return strings.Join(res, ", ")
}
