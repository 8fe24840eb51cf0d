package daemon

import (
	"context"
	"os/exec"
	"strings"
	"time"
)

// busyHook runs perflockd --busy-command: "CMD busy REASON" once a local
// exclusive or group job of the machine waits or holds, "CMD idle" once
// none does (the core's SetBusy). One run at a time, off the loop; the
// state wanted last wins, and a run that fails is tried again later. At
// start it says the state the adopted jobs give, idle included, so that a
// node an earlier daemon left drained is resumed.
type busyHook struct {
	s   *server
	cmd string
	// Loop-owned.
	want     bool
	reason   string
	said     bool // a run succeeded with have
	have     bool
	running  bool
	started  bool
	retrying bool
}

const (
	busyHookTimeout = time.Minute
	busyHookRetry   = 30 * time.Second
)

func newBusyHook(s *server, cmd string) *busyHook {
	if cmd == "" {
		return nil
	}
	return &busyHook{s: s, cmd: cmd}
}

// set records what the core said.
func (h *busyHook) set(busy bool, reason string) {
	if h == nil {
		return
	}
	h.want, h.reason = busy, reason
	h.kick()
}

// start lets runs begin, once the adopted jobs are known.
func (h *busyHook) start() {
	if h == nil {
		return
	}
	h.started = true
	h.kick()
}

func (h *busyHook) kick() {
	if !h.started || h.running || h.retrying || (h.said && h.have == h.want) {
		return
	}
	h.running = true
	busy, args := h.want, []string{"idle"}
	if busy {
		args = []string{"busy", h.reason}
	}
	s := h.s
	s.goFn(func() {
		ctx, cancel := context.WithTimeout(s.ctx, busyHookTimeout)
		out, err := exec.CommandContext(ctx, h.cmd, args...).CombinedOutput()
		cancel()
		s.post(func() { h.ran(busy, args[0], strings.TrimSpace(string(out)), err) })
	})
}

// ran takes a run's result, on the loop.
func (h *busyHook) ran(busy bool, what, out string, err error) {
	h.running = false
	if err != nil {
		h.s.log.Error("the busy command failed; trying again later", "command", h.cmd, "state", what, "err", err, "output", out, "retry_in", busyHookRetry.String())
		h.said, h.retrying = false, true
		time.AfterFunc(busyHookRetry, func() { h.s.post(func() { h.retrying = false; h.kick() }) })
		return
	}
	h.s.log.Info("busy command ran", "state", what, "output", out)
	h.said, h.have = true, busy
	h.kick()
}
