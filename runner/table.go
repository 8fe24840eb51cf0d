package runner

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/perflock/perflock/proto"
)

// WriteTable writes entries as wholock's table: a header, then one row per
// entry in the given order, with columns STATE, MODE (with the job's
// --governor in parentheses, if any), USER, PID, TIME (held or waited),
// WHERE ("-" when none) and COMMAND. When width > 0, COMMAND is
// cut so that rows fit in width columns. No entries: the line "no jobs".
// Strings from the daemon are made printable.
func WriteTable(w io.Writer, entries []proto.Entry, width int) error {
	if len(entries) == 0 {
		_, err := io.WriteString(w, "no jobs\n")
		return err
	}
	rows := [][]string{{"STATE", "MODE", "USER", "PID", "TIME", "WHERE", "COMMAND"}}
	for _, e := range entries {
		where := printable(e.Where)
		if where == "" {
			where = "-"
		}
		mode := printable(e.Mode)
		if e.Governor != "" {
			mode += " (" + printable(e.Governor) + ")"
		}
		rows = append(rows, []string{
			printable(e.State),
			mode,
			printable(e.User),
			strconv.Itoa(e.PID),
			HumanDuration(time.Duration(e.ForMS) * time.Millisecond),
			where,
			printable(strings.Join(e.Command, " ")),
		})
	}
	last := len(rows[0]) - 1
	widths := make([]int, last)
	for _, r := range rows {
		for i := range last {
			widths[i] = max(widths[i], utf8.RuneCountInString(r[i]))
		}
	}
	prefix := 0
	for _, n := range widths {
		prefix += n + 2
	}
	var b strings.Builder
	for _, r := range rows {
		for i := range last {
			b.WriteString(r[i])
			b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(r[i])+2))
		}
		cmd := r[last]
		if width > 0 {
			cmd = truncate(cmd, max(width-prefix, 10))
		}
		b.WriteString(cmd)
		b.WriteByte('\n')
	}
	_, err := fmt.Fprint(w, b.String())
	return err
}
