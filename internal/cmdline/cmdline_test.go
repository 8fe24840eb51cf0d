package cmdline

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestLineMakesControlCharactersSpaces(t *testing.T) {
	if got := Line([]string{"sh", "-c", "echo\ta\nb\x1b[2J\x7f"}); got != "sh -c echo a b [2J " {
		t.Errorf("Line = %q", got)
	}
}

func TestCutsAreValidUTF8AtEveryLength(t *testing.T) {
	s := strings.Repeat("é", 150) + "漢字😀"
	for max := 0; max <= 160; max++ {
		for name, got := range map[string]string{"Truncate": Truncate(s, max), "TruncateStart": TruncateStart(s, max)} {
			if !utf8.ValidString(got) {
				t.Fatalf("%s(_, %d) = %q: not UTF-8", name, max, got)
			}
			if n := utf8.RuneCountInString(got); n > max {
				t.Fatalf("%s(_, %d) has %d characters", name, max, n)
			}
		}
	}
	if got := Truncate("abcdef", 4); got != "abc…" {
		t.Errorf("Truncate = %q", got)
	}
	if got := TruncateStart("/a/b/c/d", 5); got != "…/c/d" {
		t.Errorf("TruncateStart = %q", got)
	}
	if got := Short([]string{"make", "bench"}, 200); got != "make bench" {
		t.Errorf("Short = %q", got)
	}
}

func TestCapKeepsWholeWordsAndCutsTheLastSafely(t *testing.T) {
	argv := []string{"run", strings.Repeat("é", 100)}
	for max := 0; max <= 210; max++ {
		got := Cap(argv, max)
		n := 0
		for _, w := range got {
			if !utf8.ValidString(w) {
				t.Fatalf("Cap(_, %d) = %q: not UTF-8", max, got)
			}
			n += len(w) + 1
		}
		if n > max && !(len(got) == 2 && got[1] == argv[1]) {
			t.Fatalf("Cap(_, %d) = %d bytes", max, n)
		}
	}
	if got := Cap([]string{"a", "b"}, 100); len(got) != 2 {
		t.Errorf("Cap of a short command changed it: %q", got)
	}
}
