package daemon

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/perflock/perflock/daemon/core"
	"github.com/perflock/perflock/internal/atomicfile"
	"github.com/perflock/perflock/lockq"
)

// The requests that wait are saved in RunDir/waiting, a line "TICKET UID"
// each: when perflockd restarts, only they may rejoin at their old places
// (each once, by its owner, with its token). The file is rewritten off the
// loop shortly after the line changes (waitersDelay), and at a clean stop;
// after a crash it is at most that much behind.
const waitersFile = "waiting"

// waitersDelay coalesces the rewrites of the waiting file.
var waitersDelay = 100 * time.Millisecond

// loadWaiters reads the waiting file an earlier daemon left.
func loadWaiters(dir string) (map[lockq.Ticket]uint32, error) {
	b, err := os.ReadFile(filepath.Join(dir, waitersFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("daemon: %s: %w", waitersFile, err)
	}
	out := map[lockq.Ticket]uint32{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		t, err1 := strconv.ParseUint(f[0], 10, 64)
		uid, err2 := strconv.ParseUint(f[1], 10, 32)
		if err1 == nil && err2 == nil && t > 0 {
			out[lockq.Ticket(t)] = uint32(uid)
		}
	}
	return out, nil
}

// encodeWaiters is the waiting file's content.
func encodeWaiters(ws []core.Waiter) []byte {
	var b bytes.Buffer
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
	b, path := encodeWaiters(s.core.Waiters()), filepath.Join(s.cfg.RunDir, waitersFile)
	s.goFn(func() {
		err := atomicfile.WriteFile(path, b, 0o600)
		s.post(func() {
			s.waitersWriting = false
			if err != nil {
				s.log.Warn("saving the waiting requests; after a restart they cannot rejoin at their places", "err", err)
			}
		})
	})
}
