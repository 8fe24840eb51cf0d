package daemon

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/perflock/perflock/daemon/core"
	"github.com/perflock/perflock/internal/atomicfile"
	"github.com/perflock/perflock/lockq"
)

// The requests that wait are saved in RunDir/waiting, a line "TICKET UID"
// each, after a first line "last N" (N: the last ticket handed out then),
// or "stopped N" when perflockd stopped cleanly. When perflockd restarts,
// only they may rejoin at their old places (each once, by its owner, with
// its token), and, after a crash, those handed out after the file was
// written (above N). The file is rewritten off the loop shortly after the
// line changes (waitersDelay), and at a clean stop.
const waitersFile = "waiting"

// waitersDelay coalesces the rewrites of the waiting file.
var waitersDelay = 100 * time.Millisecond

// savedWaiters is what the waiting file says.
type savedWaiters struct {
	tickets map[lockq.Ticket]uint32
	last    lockq.Ticket // the last ticket handed out when it was written
	clean   bool         // written at a clean stop
	found   bool         // there was a file, with its first line
}

// loadWaiters reads the waiting file an earlier daemon left; none: ok is
// false.
func loadWaiters(dir string) (w savedWaiters, ok bool, err error) {
	b, err := readStateFile(filepath.Join(dir, waitersFile))
	if errors.Is(err, fs.ErrNotExist) {
		return w, false, nil
	}
	if err != nil {
		return w, false, fmt.Errorf("daemon: %s: %w", waitersFile, err)
	}
	w.tickets = map[lockq.Ticket]uint32{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		if f[0] == "last" || f[0] == "stopped" {
			n, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return w, false, fmt.Errorf("daemon: %s: %q", waitersFile, sc.Text())
			}
			w.last, w.clean, w.found, ok = lockq.Ticket(n), f[0] == "stopped", true, true
			continue
		}
		t, err1 := strconv.ParseUint(f[0], 10, 64)
		uid, err2 := strconv.ParseUint(f[1], 10, 32)
		if err1 == nil && err2 == nil && t > 0 {
			w.tickets[lockq.Ticket(t)] = uint32(uid)
		}
	}
	return w, ok, nil
}

// encodeWaiters is the waiting file's content.
func encodeWaiters(ws []core.Waiter, last lockq.Ticket, stopped bool) []byte {
	var b bytes.Buffer
	if stopped {
		fmt.Fprintf(&b, "stopped %d\n", last)
	} else {
		fmt.Fprintf(&b, "last %d\n", last)
	}
	for _, w := range ws {
		fmt.Fprintf(&b, "%d %d\n", w.Ticket, w.UID)
	}
	return b.Bytes()
}

// waitersChanged schedules a rewrite of the waiting file, unless one is.
func (s *server) waitersChanged() {
	if s.waitersDue {
		return
	}
	s.waitersDue = true
	time.AfterFunc(waitersDelay, func() { s.post(s.saveWaiters) })
}

// saveWaiters writes the waiting file off the loop, one write at a time;
// a change meanwhile schedules the next.
func (s *server) saveWaiters() {
	s.waitersDue = false
	if s.waitersWriting {
		s.waitersChanged()
		return
	}
	s.waitersWriting = true
	b, path := encodeWaiters(s.core.Waiters(), s.core.LastTicket(), false), filepath.Join(s.cfg.RunDir, waitersFile)
	s.goFn(func() {
		err := atomicfile.Replace(path, b, 0o600)
		s.post(func() {
			s.waitersWriting = false
			if err != nil {
				s.log.Warn("saving the waiting requests; after a restart they cannot rejoin at their places", "err", err)
			}
		})
	})
}
