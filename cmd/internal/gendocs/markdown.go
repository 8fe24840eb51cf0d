package main

import (
	"strings"
	"unicode"
)

// Markdown turns a command's help text (its Long, then its "manual"
// annotation) into the markdown md2man renders. The help text is plain
// text laid out for a terminal:
//
//   - paragraphs of unindented lines;
//   - a section: an unindented heading line (upper case, or ending in a
//     colon) directly followed by indented lines;
//   - in a section, indented lines are a table of terms ("  TERM  text",
//     continued by deeper indented lines) when the first line has two spaces
//     after its first word, else a paragraph;
//   - outside sections, indented lines are literal text (commands).
//
// desc is the text before the first section, the DESCRIPTION; sections is
// the rest, each section under a level-2 heading.
func Markdown(text string) (desc, sections string) {
	var out [2][]string // the description's blocks, the sections' blocks
	part := 0
	for _, block := range blocks(text) {
		first := block[0]
		switch {
		case len(block) > 1 && indent(first) == 0 && indent(block[1]) > 0 && isHeading(first):
			part = 1
			out[1] = append(out[1], "## "+mdEscape(strings.ToUpper(strings.TrimSuffix(first, ":"))))
			out[1] = append(out[1], sectionBody(block[1:]))
		case indent(first) == 0:
			out[part] = append(out[part], paragraph(block))
		case part == 1:
			out[1] = append(out[1], sectionBody(block))
		default:
			out[0] = append(out[0], literal(block))
		}
	}
	return strings.Join(out[0], "\n\n"), join(out[1])
}

func join(blocks []string) string {
	if len(blocks) == 0 {
		return ""
	}
	return strings.Join(blocks, "\n\n") + "\n"
}

// blocks splits text into runs of non-blank lines, without trailing spaces.
func blocks(text string) [][]string {
	var bs [][]string
	var cur []string
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimRightFunc(l, unicode.IsSpace)
		if l == "" {
			if cur != nil {
				bs = append(bs, cur)
				cur = nil
			}
			continue
		}
		cur = append(cur, l)
	}
	if cur != nil {
		bs = append(bs, cur)
	}
	return bs
}

func indent(l string) int { return len(l) - len(strings.TrimLeft(l, " ")) }

// isHeading reports whether l reads as a section heading: upper-case words
// (EXIT STATUS), or a short line ending in a colon (While waiting:).
func isHeading(l string) bool {
	if strings.HasSuffix(l, ":") && len(l) <= 40 {
		return true
	}
	return strings.ToUpper(l) == l && strings.IndexFunc(l, unicode.IsLetter) >= 0
}

// paragraph joins lines into one markdown paragraph.
func paragraph(lines []string) string {
	words := make([]string, len(lines))
	for i, l := range lines {
		words[i] = strings.TrimSpace(l)
	}
	s := mdEscape(strings.Join(words, " "))
	// A paragraph must not start a list.
	if s != "" && strings.ContainsRune("-+", rune(s[0])) {
		s = `\` + s
	}
	return s
}

// literal is indented text kept as it is, in a fenced block.
func literal(lines []string) string {
	return "```\n" + strings.Join(lines, "\n") + "\n```"
}

// sectionBody is the indented text under a heading: a definition list when
// its first line has a term, else a paragraph.
func sectionBody(lines []string) string {
	base := indent(lines[0])
	if _, _, ok := term(lines[0]); !ok {
		return paragraph(lines)
	}
	var items []string
	var t string
	var def []string
	flush := func() {
		if t != "" {
			items = append(items, mdEscape(t)+"\n: "+paragraph(def))
		}
	}
	for _, l := range lines {
		if indent(l) == base {
			if tt, d, ok := term(l); ok {
				flush()
				t, def = tt, []string{d}
				continue
			}
		}
		def = append(def, l)
	}
	flush()
	return strings.Join(items, "\n\n")
}

// term splits "  TERM  text" at its first run of two or more spaces.
func term(l string) (t, def string, ok bool) {
	l = strings.TrimSpace(l)
	i := strings.Index(l, "  ")
	if i < 0 {
		return "", "", false
	}
	return l[:i], strings.TrimSpace(l[i:]), true
}

// mdEscape escapes the characters markdown would read as markup.
func mdEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune("\\`*_[]<>#|", r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
