package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/internal/cmdline"
	"github.com/perflock/perflock/proto"
)

// WatchHeader is the first line of wholock --watch, e.g. "perflockd
// cgroupfs/freeze: 1 running, 2 frozen, 3 waiting", with the local time
// (HH:MM:SS) at the right end of width columns (0: one space apart).
// Running counts granted jobs, frozen the freezing ones.
func WatchHeader(s Snapshot, now time.Time, width int) string {
	var left string
	if s.Lost != nil {
		left = "perflockd unreachable, retrying every second: " + printable(s.Lost.Error())
	} else {
		var running, frozen, waiting int
		for _, e := range s.Entries {
			switch e.State {
			case "running", "granted":
				running++
			case "frozen", "freezing":
				frozen++
			case "waiting":
				waiting++
			}
		}
		left = fmt.Sprintf("%d running, %d frozen, %d waiting", running, frozen, waiting)
		if s.Driver != "" {
			left = fmt.Sprintf("perflockd %s/%s: %s", printable(s.Driver), printable(s.Policy), left)
		}
	}
	clock := now.Format("15:04:05")
	if width <= 0 {
		return left + "  " + clock
	}
	room := width - utf8.RuneCountInString(clock) - 2
	if room < 10 {
		return cmdline.Truncate(left, width)
	}
	left = cmdline.Truncate(left, room)
	return left + strings.Repeat(" ", width-utf8.RuneCountInString(left)-utf8.RuneCountInString(clock)) + clock
}

// WatchScreen is one screen of wholock --watch as lines: the header, then
// the table [WriteTable] prints, with each job's TIME advanced from when
// the listing arrived to now. width and height fit it to a terminal (0: no
// bound): no line is wider than width, and a queue taller than the screen
// ends with a line saying how many jobs are not shown.
func WatchScreen(s Snapshot, now time.Time, width, height int) []string {
	lines := []string{WatchHeader(s, now, width)}
	if s.Lost != nil {
		return lines
	}
	age := now.Sub(s.Received)
	entries := make([]proto.Entry, len(s.Entries))
	for i, e := range s.Entries {
		e.ForMS += age.Milliseconds()
		entries[i] = e
	}
	var b strings.Builder
	WriteTable(&b, entries, width)
	lines = append(lines, strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")...)
	switch {
	case height == 1:
		lines = lines[:1]
	case height > 0 && len(lines) > height:
		hidden := len(lines) - height + 1
		lines = append(lines[:height-1], fmt.Sprintf("… %d more (wholock lists them all)", hidden))
	}
	if width > 0 {
		for i, l := range lines {
			lines[i] = cmdline.Truncate(l, width)
		}
	}
	return lines
}

// Terminal control sequences of the watch view.
const (
	enterScreen = "\033[?1049h\033[?25l" // alternate screen, cursor hidden
	leaveScreen = "\033[?25h\033[?1049l" // cursor shown, screen restored
)

// WatchTerminal is wholock --watch on a terminal: it redraws out, on the
// alternate screen, whenever the queue changes, and every second so that
// the clock and the jobs' times advance (locally: the daemon is not asked),
// and on a resize. It returns nil when ctx is done, restoring the screen
// and cursor, and [Watch]'s error otherwise (before drawing anything when
// the first connection fails). Before the first draw, a slow first
// connection is told on errw.
func WatchTerminal(ctx context.Context, socket string, out *os.File, errw io.Writer) error {
	snaps, stop := watchLatest(ctx, socket, errw)
	defer stop.cancel()
	var cur Snapshot
	select {
	case cur = <-snaps:
	case err := <-stop.done:
		return watchEnded(ctx, err)
	case <-ctx.Done():
		return stop.wait()
	}
	fmt.Fprint(out, enterScreen)
	defer fmt.Fprint(out, leaveScreen)
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)
	tick := time.NewTimer(time.Hour)
	defer tick.Stop()
	for {
		now := time.Now()
		drawScreen(out, cur, now)
		tick.Reset(now.Truncate(time.Second).Add(time.Second).Sub(now)) // the next second
		select {
		case <-ctx.Done():
			return stop.wait()
		case err := <-stop.done:
			return watchEnded(ctx, err)
		case cur = <-snaps:
		case <-tick.C:
		case <-winch:
		}
	}
}

// drawScreen redraws the screen in place: each line overwritten and
// cleared to its end, then the rest of the screen cleared, so nothing
// flickers.
func drawScreen(out *os.File, s Snapshot, now time.Time) {
	width, height, _ := terminalSize(out)
	var b strings.Builder
	b.WriteString("\033[H")
	for i, l := range WatchScreen(s, now, width, height) {
		if i > 0 {
			b.WriteString("\r\n")
		}
		b.WriteString(l)
		b.WriteString("\033[K")
	}
	b.WriteString("\033[J")
	io.WriteString(out, b.String())
}

// WatchJSON is wholock --watch --json (or --watch when out is not a
// terminal): one JSON array per listing, on one line each, as --json
// prints it. A slow first connection, losing the daemon and reconnecting
// are told on errw, once each. It returns nil when ctx is done, and
// [Watch]'s error otherwise.
func WatchJSON(ctx context.Context, socket string, out, errw io.Writer) error {
	lost := false
	err := Watch(ctx, socket, errw, func(s Snapshot) error {
		if s.Lost != nil {
			if !lost {
				fmt.Fprintf(errw, "wholock: lost perflockd (%s); reconnecting every second\n", printable(s.Lost.Error()))
			}
			lost = true
			return nil
		}
		if lost {
			fmt.Fprintln(errw, "wholock: reconnected to perflockd")
			lost = false
		}
		b, err := json.Marshal(s.Entries)
		if err != nil {
			return err
		}
		_, err = out.Write(append(b, '\n'))
		return err
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// watchEnded is the result of a watch that ended by itself: nil if ctx is
// done, else its error.
func watchEnded(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool { return isTerminal(f) }

// terminalSize is the terminal's width and height, in columns and rows.
func terminalSize(f *os.File) (width, height int, err error) {
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0, 0, err
	}
	return int(ws.Col), int(ws.Row), nil
}

// watchRun is Watch running in a goroutine of its own.
type watchRun struct {
	cancel context.CancelFunc
	done   chan error
}

// wait ends the watch and waits for its goroutine; it returns nil.
func (w watchRun) wait() error {
	w.cancel()
	<-w.done
	return nil
}

// watchLatest runs Watch, keeping only the latest snapshot for the reader
// of the returned channel: a slow screen skips states, never lags.
func watchLatest(ctx context.Context, socket string, notices io.Writer) (<-chan Snapshot, watchRun) {
	ctx, cancel := context.WithCancel(ctx)
	snaps := make(chan Snapshot, 1)
	w := watchRun{cancel: cancel, done: make(chan error, 1)}
	go func() {
		w.done <- Watch(ctx, socket, notices, func(s Snapshot) error {
			select {
			case <-snaps: // replaced
			default:
			}
			snaps <- s // the only sender: there is room now
			return nil
		})
	}()
	return snaps, w
}
