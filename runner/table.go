package runner

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/perflock/perflock/internal/cmdline"
	"github.com/perflock/perflock/proto"
)

// WriteTable writes entries as wholock's table: a header, then one row per
// entry in the given order, with columns STATE ("(shielded)" after a job
// under perflockd's shield), MODE (with the job's
// --governor in parentheses, if any), USER, PID, TIME (held or waited),
// WHERE ("-" when none) and COMMAND. When width > 0, COMMAND is cut so
// that rows fit in width columns; to leave COMMAND some room, long WHERE
// paths are cut at their start, keeping the job's name at their end.
// No entries: the line "no jobs".
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
		state := printable(e.State)
		if e.Shielded {
			state += " (shielded)"
		}
		rows = append(rows, []string{
			state,
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
	const whereCol, minCommand, minWhere = 5, 20, 12
	if short := prefix + minCommand - width; width > 0 && short > 0 && widths[whereCol] > minWhere {
		cut := min(short, widths[whereCol]-minWhere)
		widths[whereCol] -= cut
		prefix -= cut
	}
	var b strings.Builder
	for _, r := range rows {
		for i := range last {
			cell := r[i]
			if i == whereCol {
				cell = cmdline.TruncateStart(cell, widths[i])
			}
			b.WriteString(cell)
			b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(cell)+2))
		}
		cmd := r[last]
		if width > 0 {
			cmd = cmdline.Truncate(cmd, max(width-prefix, 10))
		}
		b.WriteString(cmd)
		b.WriteByte('\n')
	}
	_, err := fmt.Fprint(w, b.String())
	return err
}
