package jobname

import "testing"

func TestNamesRoundTrip(t *testing.T) {
	for _, c := range []struct {
		k    Kind
		t    uint64
		name string
	}{{Exclusive, 42, "x-42"}, {Shared, 1, "s-1"}, {Shared, 0, "s-0"}, {Exclusive, 18446744073709551615, "x-18446744073709551615"}} {
		if got := Format(c.k, c.t); got != c.name {
			t.Errorf("Format(%v, %d) = %q, want %q", c.k, c.t, got, c.name)
		}
		k, n, ok := Parse(c.name)
		if !ok || k != c.k || n != c.t {
			t.Errorf("Parse(%q) = %v %d %v", c.name, k, n, ok)
		}
		k, n, ok = ParseScope(Scope(c.name))
		if !ok || k != c.k || n != c.t {
			t.Errorf("ParseScope(%q) = %v %d %v", Scope(c.name), k, n, ok)
		}
	}
}

func TestOnlyCanonicalNamesParse(t *testing.T) {
	for _, bad := range []string{"", "x", "x-", "x-00", "x-042", "x-+4", "x--4", "y-4", "X-4", "x-4a", "x-18446744073709551616", "s-4-5"} {
		if _, _, ok := Parse(bad); ok {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"perflock-x-4.service", "x-4.scope", "perflock-x-4", "perflock-shared.slice"} {
		if _, _, ok := ParseScope(bad); ok {
			t.Errorf("ParseScope(%q) accepted", bad)
		}
	}
}

func TestKindString(t *testing.T) {
	if Exclusive.String() != "x" || Shared.String() != "s" || Kind(0).String() != "Kind(0)" {
		t.Errorf("Kind strings %q %q %q", Exclusive, Shared, Kind(0))
	}
}
