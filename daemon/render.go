package daemon

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	sdnotify "github.com/coreos/go-systemd/v22/daemon"

	"github.com/perflock/perflock/daemon/core"
	"github.com/perflock/perflock/internal/cmdline"
	"github.com/perflock/perflock/lockq"
	"github.com/perflock/perflock/proto"
)

var replyTypes = [...]string{
	core.SayQueued: proto.TQueued, core.SayWaiting: proto.TWaiting, core.SayGranted: proto.TGranted,
	core.SayPlaced: proto.TPlaced, core.SayBusy: proto.TBusy, core.SayExpired: proto.TExpired,
	core.SaySkipped: proto.TSkipped, core.SayFrozen: proto.TFrozen, core.SayThawed: proto.TThawed,
	core.SayCancelled: proto.TCancelled, core.SayError: proto.TError,
}

var errorCodes = [...]string{
	core.Invalid: proto.CodeInvalid, core.Denied: proto.CodeDenied, core.Limit: proto.CodeLimit,
	core.Internal: proto.CodeInternal, core.Unavailable: proto.CodeUnavailable,
}

// render is a reply of the core as a message of the wire protocol.
func (s *server) render(r core.Reply) proto.Msg {
	m := proto.Msg{Type: replyTypes[r.Kind], Ticket: uint64(r.Ticket), Job: r.Job, Position: r.Position,
		Where: r.Where, Message: r.Text}
	if r.Kind == core.SayError {
		m.Code = errorCodes[r.Code]
	}
	if r.Kind == core.SayQueued {
		m.Token = s.state.token(r.Ticket, r.UID)
	}
	now := s.now()
	for _, h := range r.Holders {
		m.Holders = append(m.Holders, proto.Holder{
			User: h.User, Mode: h.Mode.String(), Command: cmdline.Short(h.Command, maxCommandInStatus),
			HeldMS: time.Duration(now - h.Since).Milliseconds(), Frozen: h.Frozen,
		})
	}
	return m
}

// listChunk bounds the entries of one list message, in encoded bytes, and
// listCommand the bytes of one entry's command.
const (
	listChunk   = proto.MaxMessage / 2
	listCommand = 4096
)

// state is how a listing names where a job stands.
func state(v core.JobView) string {
	switch {
	case !v.Phase.Holding():
		return "waiting"
	case v.Suspend == lockq.IsSuspended:
		return "frozen"
	case v.Suspend == lockq.Suspending:
		return "freezing"
	case v.Phase >= core.Running:
		return "running"
	}
	return "granted"
}

// list is the queue as wholock shows it, in as many list messages as it
// takes (each within proto.MaxMessage).
func (s *server) list() []proto.Msg {
	now := s.now()
	var msgs []proto.Msg
	m := proto.Msg{Type: proto.TList, Entries: []proto.Entry{}}
	size := 0
	for _, v := range s.core.Jobs() {
		ent := proto.Entry{
			Ticket: uint64(v.Ticket), Job: v.Name, State: state(v), Mode: v.Mode.String(), Resources: v.Resources,
			User: v.User, UID: v.UID, PID: v.ClientPID, ChildPID: v.ChildPID, Position: v.Position,
			SinceMS: wall(v.Since).UnixMilli(), ForMS: time.Duration(now - v.Since).Milliseconds(),
			Command: cmdline.Cap(v.Command, listCommand), Where: v.Where, Governor: v.Governor, Shielded: v.Shielded,
		}
		b, _ := json.Marshal(ent)
		if size+len(b) > listChunk && len(m.Entries) > 0 {
			m.More = true
			msgs = append(msgs, m)
			m = proto.Msg{Type: proto.TList, Entries: []proto.Entry{}}
			size = 0
		}
		size += len(b) + 1
		m.Entries = append(m.Entries, ent)
	}
	return append(msgs, m)
}

// notifyStatus tells the service manager (systemd's STATUS=, shown by
// systemctl status) what the queue looks like; a no-op elsewhere.
func (s *server) notifyStatus() {
	st := s.summary(s.now())
	if st == s.lastStatus {
		return
	}
	s.lastStatus = st
	sdnotify.SdNotify(false, "STATUS="+st)
}

// summary is one line about the queue, e.g. "1 exclusive running (alice:
// make bench, 2m10s); 3 waiting; 2 shared frozen".
func (s *server) summary(now core.Time) string {
	var excl, shared, frozen, waiting int
	var first *core.JobView
	jobs := s.core.Jobs()
	for i, v := range jobs {
		switch {
		case !v.Phase.Holding():
			waiting++
		case v.Suspend != lockq.NotSuspended:
			frozen++
		case v.Mode.Kind == lockq.Shared:
			shared++
		default:
			excl++
			if first == nil {
				first = &jobs[i]
			}
		}
	}
	var parts []string
	if excl > 0 {
		parts = append(parts, fmt.Sprintf("%d exclusive running (%s: %s, %s)", excl, first.User,
			cmdline.Short(first.Command, 60), time.Duration(now-first.Since).Round(time.Second)))
	}
	if shared > 0 {
		parts = append(parts, fmt.Sprintf("%d shared running", shared))
	}
	if waiting > 0 {
		parts = append(parts, fmt.Sprintf("%d waiting", waiting))
	}
	if frozen > 0 {
		parts = append(parts, fmt.Sprintf("%d shared frozen", frozen))
	}
	if len(parts) == 0 {
		return "idle"
	}
	return strings.Join(parts, "; ")
}
