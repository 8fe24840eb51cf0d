package lockq

import (
	"strconv"
	"strings"
)

// Kind is the kind of a lock mode.
type Kind uint8

// The three kinds of mode.
const (
	Exclusive Kind = iota + 1
	Shared
	Group
)

// Mode is how a request wants its resources: [Exclusive], [Shared], or
// [Group] with a 32-bit group ID. The zero Mode is invalid.
type Mode struct {
	Kind  Kind
	Group uint32 // the group ID; meaningful only for Kind == Group
}

// ExclusiveMode, SharedMode and GroupMode build modes.
func ExclusiveMode() Mode           { return Mode{Kind: Exclusive} }
func SharedMode() Mode              { return Mode{Kind: Shared} }
func GroupMode(id uint32) Mode      { return Mode{Kind: Group, Group: id} }
func (m Mode) valid() bool          { return m.Kind >= Exclusive && m.Kind <= Group }
func (m Mode) excludesShared() bool { return m.Kind == Exclusive || m.Kind == Group }

// Compatible reports whether a holder or waiter in mode m may share a
// resource with one in mode o: shared with shared, group(a) with group(a).
func (m Mode) Compatible(o Mode) bool {
	switch {
	case m.Kind == Shared && o.Kind == Shared:
		return true
	case m.Kind == Group && o.Kind == Group:
		return m.Group == o.Group
	}
	return false
}

// String gives "exclusive", "shared" or "group(ID)".
func (m Mode) String() string {
	switch m.Kind {
	case Exclusive:
		return "exclusive"
	case Shared:
		return "shared"
	case Group:
		return "group(" + strconv.FormatUint(uint64(m.Group), 10) + ")"
	}
	return "invalid"
}

// ParseMode reads what [Mode.String] writes.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "exclusive":
		return ExclusiveMode(), nil
	case "shared":
		return SharedMode(), nil
	}
	if id, ok := strings.CutPrefix(s, "group("); ok {
		if id, ok := strings.CutSuffix(id, ")"); ok {
			n, err := strconv.ParseUint(id, 10, 32)
			if err == nil {
				return GroupMode(uint32(n)), nil
			}
		}
	}
	return Mode{}, detailError(ErrInvalid, "mode "+strconv.Quote(s)+" (want exclusive, shared or group(ID))")
}
