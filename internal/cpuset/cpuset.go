// Package cpuset is a set of CPU numbers and the three ways Linux and
// systemd write one: the list format of cpuset.cpus, smp_affinity_list and
// /sys/devices/system/cpu/online ("0-3,8"); the hex bitmap of smp_affinity
// and the workqueue cpumask ("ff,00000001", 32-bit groups, most
// significant first); and systemd's AllowedCPUs= bytes (little-endian,
// byte i holds CPUs 8i to 8i+7).
package cpuset

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"slices"
	"strconv"
	"strings"
)

// MaxCPUs bounds the CPU numbers accepted: the kernel's largest NR_CPUS.
const MaxCPUs = 8192

// ErrSyntax is a CPU list or mask that cannot be read.
var ErrSyntax = errors.New("cpuset: bad CPU list")

// Set is a set of CPUs. The zero value is the empty set. A Set is a value:
// no method changes it, and it may be shared between goroutines.
type Set struct {
	words []uint64 // bit c%64 of words[c/64] is CPU c; no trailing zero words
}

// Of returns the set of the given CPUs. It panics on a CPU outside 0 to
// MaxCPUs-1, which is a programming error.
func Of(cpus ...int) Set {
	var s Set
	for _, c := range cpus {
		if c < 0 || c >= MaxCPUs {
			panic(fmt.Sprintf("cpuset.Of: CPU %d out of range", c))
		}
		s = s.with(c)
	}
	return s
}

func (s Set) with(c int) Set {
	w := slices.Clone(s.words)
	for len(w) <= c/64 {
		w = append(w, 0)
	}
	w[c/64] |= 1 << (c % 64)
	return Set{w}
}

// trim drops trailing zero words, so that equal sets have equal words.
func trim(w []uint64) Set {
	for len(w) > 0 && w[len(w)-1] == 0 {
		w = w[:len(w)-1]
	}
	return Set{w}
}

// Parse reads the list format: CPUs and inclusive ranges separated by
// commas, "0-3,8"; spaces and a final newline around it are ignored, and
// "" is the empty set. Errors wrap ErrSyntax.
func Parse(list string) (Set, error) {
	list = strings.TrimSpace(list)
	if list == "" {
		return Set{}, nil
	}
	var w []uint64
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return Set{}, fmt.Errorf("%w %q: %q is not a CPU", ErrSyntax, list, part)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return Set{}, fmt.Errorf("%w %q: %q is not a range of CPUs", ErrSyntax, list, part)
			}
		}
		if b >= MaxCPUs {
			return Set{}, fmt.Errorf("%w %q: CPU %d is beyond %d", ErrSyntax, list, b, MaxCPUs-1)
		}
		for len(w) <= b/64 {
			w = append(w, 0)
		}
		for c := a; c <= b; c++ {
			w[c/64] |= 1 << (c % 64)
		}
	}
	return trim(w), nil
}

// MustParse is Parse for constants in tests and tables; it panics on an
// error.
func MustParse(list string) Set {
	s, err := Parse(list)
	if err != nil {
		panic(err)
	}
	return s
}

// ReadFile reads a file in the list format, such as
// /sys/devices/system/cpu/online. Errors name the file.
func ReadFile(path string) (Set, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Set{}, fmt.Errorf("cpuset: %w", err)
	}
	s, err := Parse(string(b))
	if err != nil {
		return Set{}, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// String is the set in the list format, ranges joined: "0-3,8"; "" for the
// empty set.
func (s Set) String() string {
	var b strings.Builder
	cpus := s.CPUs()
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(cpus[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(cpus[j]))
		}
		i = j + 1
	}
	return b.String()
}

// ParseHex reads the kernel's hex bitmap format: hex digits in groups of
// at most 32 bits separated by commas, the most significant group first,
// as /proc/irq/*/smp_affinity and the workqueue cpumask show it ("3",
// "00000000,00000003"). Errors wrap ErrSyntax.
func ParseHex(mask string) (Set, error) {
	mask = strings.TrimSpace(mask)
	if mask == "" {
		return Set{}, fmt.Errorf("%w: empty mask", ErrSyntax)
	}
	groups := strings.Split(mask, ",")
	var w []uint64
	for i, g := range groups {
		if g == "" || len(g) > 8 {
			return Set{}, fmt.Errorf("%w: mask %q: group %q is not 32 bits of hex", ErrSyntax, mask, g)
		}
		v, err := strconv.ParseUint(g, 16, 32)
		if err != nil {
			return Set{}, fmt.Errorf("%w: mask %q: %q is not hex", ErrSyntax, mask, g)
		}
		shift := 32 * (len(groups) - 1 - i) // bit number of this group's lowest bit
		if v != 0 && shift+bits.Len64(v) > MaxCPUs {
			return Set{}, fmt.Errorf("%w: mask %q: CPUs beyond %d", ErrSyntax, mask, MaxCPUs-1)
		}
		for len(w) <= shift/64 {
			w = append(w, 0)
		}
		w[shift/64] |= v << (shift % 64)
	}
	return trim(w), nil
}

// Hex is the set in the kernel's hex bitmap format, without leading zero
// groups: "3", "1,00000000" (CPU 32); "0" for the empty set.
func (s Set) Hex() string {
	var groups []string
	for i := len(s.words) - 1; i >= 0; i-- {
		groups = append(groups, fmt.Sprintf("%08x", uint32(s.words[i]>>32)), fmt.Sprintf("%08x", uint32(s.words[i])))
	}
	for len(groups) > 1 && groups[0] == "00000000" {
		groups = groups[1:]
	}
	if len(groups) == 0 {
		return "0"
	}
	groups[0] = strings.TrimLeft(groups[0], "0")
	if groups[0] == "" {
		groups[0] = "0"
	}
	return strings.Join(groups, ",")
}

// FromMask reads systemd's AllowedCPUs= and EffectiveCPUs= bytes: byte i
// holds CPUs 8i to 8i+7, the lowest bit the lowest CPU. Bits beyond
// MaxCPUs are ignored.
func FromMask(mask []byte) Set {
	var w []uint64
	for i, b := range mask {
		if i*8 >= MaxCPUs {
			break
		}
		for len(w) <= i/8 {
			w = append(w, 0)
		}
		w[i/8] |= uint64(b) << (8 * (i % 8))
	}
	return trim(w)
}

// Mask is the set as systemd's AllowedCPUs= bytes (see FromMask); nil for
// the empty set, which systemd reads as "no setting".
func (s Set) Mask() []byte {
	if s.IsEmpty() {
		return nil
	}
	last := s.CPUs()[s.Len()-1]
	m := make([]byte, last/8+1)
	for _, c := range s.CPUs() {
		m[c/8] |= 1 << (c % 8)
	}
	return m
}

// CPUs lists the set's CPUs in increasing order.
func (s Set) CPUs() []int {
	var cpus []int
	for i, w := range s.words {
		for w != 0 {
			b := bits.TrailingZeros64(w)
			cpus = append(cpus, 64*i+b)
			w &^= 1 << b
		}
	}
	return cpus
}

// Len is the number of CPUs in the set.
func (s Set) Len() int {
	n := 0
	for _, w := range s.words {
		n += bits.OnesCount64(w)
	}
	return n
}

// IsEmpty reports whether the set has no CPU.
func (s Set) IsEmpty() bool { return len(s.words) == 0 }

// Contains reports whether CPU c is in the set.
func (s Set) Contains(c int) bool {
	return c >= 0 && c/64 < len(s.words) && s.words[c/64]&(1<<(c%64)) != 0
}

// Equal reports whether both sets hold the same CPUs.
func (s Set) Equal(o Set) bool { return slices.Equal(s.words, o.words) }

// SubsetOf reports whether every CPU of s is in o.
func (s Set) SubsetOf(o Set) bool { return s.Difference(o).IsEmpty() }

// Union is the CPUs in s or o.
func (s Set) Union(o Set) Set {
	w := make([]uint64, max(len(s.words), len(o.words)))
	copy(w, s.words)
	for i, x := range o.words {
		w[i] |= x
	}
	return trim(w)
}

// Intersect is the CPUs in both s and o.
func (s Set) Intersect(o Set) Set {
	w := make([]uint64, min(len(s.words), len(o.words)))
	for i := range w {
		w[i] = s.words[i] & o.words[i]
	}
	return trim(w)
}

// Difference is the CPUs in s and not in o.
func (s Set) Difference(o Set) Set {
	w := slices.Clone(s.words)
	for i := range min(len(w), len(o.words)) {
		w[i] &^= o.words[i]
	}
	return trim(w)
}

// MarshalText writes the list format, so that a Set is a JSON string.
func (s Set) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads the list format (Parse).
func (s *Set) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}
