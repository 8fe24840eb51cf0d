package cpuset

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

func TestParseAndString(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		cpus     []int
	}{
		{"", "", nil},
		{"\n", "", nil},
		{"0", "0", []int{0}},
		{"0-3,8\n", "0-3,8", []int{0, 1, 2, 3, 8}},
		{"8,0-1,1", "0-1,8", []int{0, 1, 8}},
		{"5-5", "5", []int{5}},
		{" 0 - 1 , 3", "", nil}, // spaces inside a part are not the kernel's format
		{"63-65", "63-65", []int{63, 64, 65}},
		{"8191", "8191", []int{8191}},
	} {
		s, err := Parse(tc.in)
		if tc.in == " 0 - 1 , 3" {
			if !errors.Is(err, ErrSyntax) {
				t.Errorf("Parse(%q): %v, want ErrSyntax", tc.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if got := s.String(); got != tc.want || !slices.Equal(s.CPUs(), tc.cpus) || s.Len() != len(tc.cpus) {
			t.Errorf("Parse(%q) = %q %v (len %d), want %q %v", tc.in, got, s.CPUs(), s.Len(), tc.want, tc.cpus)
		}
	}
	for _, bad := range []string{"x", "-1", "3-1", "1-", ",", "0,,1", "8192", "0-8192", "1.5"} {
		if _, err := Parse(bad); !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q): %v, want ErrSyntax", bad, err)
		}
	}
}

func TestHex(t *testing.T) {
	for _, tc := range []struct{ in, list, hex string }{
		{"3", "0-1", "3"},
		{"00000000,00000003", "0-1", "3"},
		{"ffffffff,ffffffff", "0-63", "ffffffff,ffffffff"},
		{"1,00000000", "32", "1,00000000"},
		{"1,00000000,00000000", "64", "1,00000000,00000000"},
		{"0", "", "0"},
		{"80000000,00000001\n", "0,63", "80000000,00000001"},
	} {
		s, err := ParseHex(tc.in)
		if err != nil {
			t.Errorf("ParseHex(%q): %v", tc.in, err)
			continue
		}
		if s.String() != tc.list || s.Hex() != tc.hex {
			t.Errorf("ParseHex(%q) = %q, Hex %q; want %q, %q", tc.in, s, s.Hex(), tc.list, tc.hex)
		}
	}
	for _, bad := range []string{"", "g", "123456789", "1,,2", ","} {
		if _, err := ParseHex(bad); !errors.Is(err, ErrSyntax) {
			t.Errorf("ParseHex(%q): %v, want ErrSyntax", bad, err)
		}
	}
}

func TestMask(t *testing.T) {
	for _, tc := range []struct {
		list string
		mask []byte
	}{
		{"", nil},
		{"0", []byte{1}},
		{"0-1", []byte{3}},
		{"8", []byte{0, 1}},
		{"0-3,8", []byte{0x0f, 0x01}},
		{"63,64", []byte{0, 0, 0, 0, 0, 0, 0, 0x80, 1}},
	} {
		s := MustParse(tc.list)
		if got := s.Mask(); !bytes.Equal(got, tc.mask) {
			t.Errorf("%q.Mask() = %v, want %v", tc.list, got, tc.mask)
		}
		if got := FromMask(tc.mask); !got.Equal(s) {
			t.Errorf("FromMask(%v) = %q, want %q", tc.mask, got, tc.list)
		}
	}
	// systemd may pad with zero bytes.
	if got := FromMask([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0}); got.String() != "0" {
		t.Errorf("FromMask with padding = %q", got)
	}
}

func TestSetAlgebra(t *testing.T) {
	a, b := MustParse("0-3"), MustParse("2-5,64")
	for _, tc := range []struct {
		name      string
		got, want Set
	}{
		{"union", a.Union(b), MustParse("0-5,64")},
		{"intersect", a.Intersect(b), MustParse("2-3")},
		{"difference", b.Difference(a), MustParse("4-5,64")},
		{"difference to empty", a.Difference(MustParse("0-7")), Set{}},
	} {
		if !tc.got.Equal(tc.want) {
			t.Errorf("%s = %q, want %q", tc.name, tc.got, tc.want)
		}
	}
	if !MustParse("2").SubsetOf(a) || b.SubsetOf(a) || !(Set{}).SubsetOf(a) {
		t.Error("SubsetOf")
	}
	if !b.Contains(64) || b.Contains(63) || b.Contains(-1) || b.Contains(100000) {
		t.Error("Contains")
	}
	if !Of(1, 0).Equal(MustParse("0-1")) || !(Set{}).IsEmpty() || Of().Len() != 0 {
		t.Error("Of")
	}
}

func TestJSON(t *testing.T) {
	type doc struct {
		CPUs Set `json:"cpus"`
	}
	b, err := json.Marshal(doc{MustParse("0-2,7")})
	if err != nil || string(b) != `{"cpus":"0-2,7"}` {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
	var d doc
	if err := json.Unmarshal([]byte(`{"cpus":"1,3"}`), &d); err != nil || d.CPUs.String() != "1,3" {
		t.Errorf("Unmarshal = %q, %v", d.CPUs, err)
	}
	if err := json.Unmarshal([]byte(`{"cpus":"1-"}`), &d); !errors.Is(err, ErrSyntax) {
		t.Errorf("Unmarshal of a bad list: %v, want ErrSyntax", err)
	}
}

// Every format reads back what it wrote.
func TestRoundTrips(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cpus := rapid.SliceOf(rapid.IntRange(0, 300)).Draw(t, "cpus")
		s := Of(cpus...)
		if got := MustParse(s.String()); !got.Equal(s) {
			t.Fatalf("list %q read back as %q", s, got)
		}
		if got, err := ParseHex(s.Hex()); err != nil || !got.Equal(s) {
			t.Fatalf("hex %q read back as %q, %v", s.Hex(), got, err)
		}
		if got := FromMask(s.Mask()); !got.Equal(s) {
			t.Fatalf("mask %v read back as %q", s.Mask(), got)
		}
		if s.Len() != len(s.CPUs()) {
			t.Fatalf("Len %d, CPUs %v", s.Len(), s.CPUs())
		}
	})
}
