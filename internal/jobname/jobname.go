// Package jobname is the one codec of perflock's job names: "x-42" names the
// exclusive (or group) job of ticket 42, "s-43" the shared job of ticket 43.
// The names appear in listings, in wholock --cancel, in the cgroupfs
// driver's cgroups (perflock/exclusive/x-42) and in the systemd driver's
// scopes (perflock-x-42.scope); a restarted perflockd reads mode and ticket
// back from them.
package jobname

import (
	"strconv"
	"strings"
)

// Kind is the side a job runs on.
type Kind uint8

const (
	// Exclusive: an exclusive or group job, "x".
	Exclusive Kind = iota + 1
	// Shared: a shared job, "s".
	Shared
)

// String is the Prefix, or "Kind(N)" for an invalid Kind.
func (k Kind) String() string {
	if p := k.Prefix(); p != "" {
		return p
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Prefix is "x" or "s"; "" for an invalid Kind.
func (k Kind) Prefix() string {
	switch k {
	case Exclusive:
		return "x"
	case Shared:
		return "s"
	}
	return ""
}

// Valid reports whether k is Exclusive or Shared.
func (k Kind) Valid() bool { return k == Exclusive || k == Shared }

// Format is the name of the job of kind k with ticket t: "x-42".
func Format(k Kind, t uint64) string {
	return k.Prefix() + "-" + strconv.FormatUint(t, 10)
}

// Parse reads a name Format writes. Only canonical names are accepted (no
// sign, no leading zero), so that a name round-trips.
func Parse(name string) (k Kind, t uint64, ok bool) {
	prefix, digits, found := strings.Cut(name, "-")
	if !found || digits == "" || (len(digits) > 1 && digits[0] == '0') {
		return 0, 0, false
	}
	switch prefix {
	case "x":
		k = Exclusive
	case "s":
		k = Shared
	default:
		return 0, 0, false
	}
	for _, c := range []byte(digits) {
		if c < '0' || c > '9' {
			return 0, 0, false
		}
	}
	t, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	return k, t, true
}

// Scope is the systemd unit a job runs in: "perflock-x-42.scope".
func Scope(name string) string { return "perflock-" + name + ".scope" }

// ParseScope reads a unit name Scope writes.
func ParseScope(unit string) (k Kind, t uint64, ok bool) {
	name, found := strings.CutPrefix(unit, "perflock-")
	if !found {
		return 0, 0, false
	}
	if name, found = strings.CutSuffix(name, ".scope"); !found {
		return 0, 0, false
	}
	return Parse(name)
}
