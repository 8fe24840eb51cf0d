// Package cmdline renders a job's command line for people, in one place:
// on one line, with control characters made spaces, and cut at a character
// (rune) boundary, never inside a UTF-8 sequence, so that what it returns
// is valid UTF-8 whenever its input is (D-Bus refuses anything else in a
// unit's Description).
package cmdline

import (
	"strings"
	"unicode/utf8"
)

// Ellipsis ends a cut text.
const Ellipsis = "…"

// Line joins argv with spaces and makes control characters spaces.
func Line(argv []string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, strings.Join(argv, " "))
}

// Short is Line(argv) cut to at most max characters.
func Short(argv []string, max int) string { return Truncate(Line(argv), max) }

// Truncate cuts s to at most max characters, the last of them an
// Ellipsis when it cuts.
func Truncate(s string, max int) string {
	if max <= 0 {
		return ""
	}
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	n := 0
	for i := range s {
		if n == max-1 {
			return s[:i] + Ellipsis
		}
		n++
	}
	return s
}

// TruncateStart cuts s to at most max characters keeping its end, the first
// of them an Ellipsis when it cuts (for paths, whose ends say most).
func TruncateStart(s string, max int) string {
	if max <= 0 {
		return ""
	}
	n := utf8.RuneCountInString(s)
	if n <= max {
		return s
	}
	skip := n - max + 1
	for i := range s {
		if skip == 0 {
			return Ellipsis + s[i:]
		}
		skip--
	}
	return Ellipsis
}

// Cap keeps the first words of argv that fit in max bytes (a space counted
// after each); a word that does not fit whole is cut at a character
// boundary and ends with an Ellipsis, when there is room for one.
func Cap(argv []string, max int) []string {
	n := 0
	for i, w := range argv {
		n += len(w) + 1
		if n <= max {
			continue
		}
		out := append([]string(nil), argv[:i]...)
		room := max - (n - len(w)) // bytes left for this word and its space
		if cut := room - 1 - len(Ellipsis); cut > 0 {
			for cut > 0 && !utf8.RuneStart(w[cut]) {
				cut--
			}
			out = append(out, w[:cut]+Ellipsis)
		}
		return out
	}
	return argv
}
