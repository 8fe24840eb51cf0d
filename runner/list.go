package runner

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/perflock/perflock/proto"
)

// List returns the daemon's queue: holders in ticket order, then waiters in
// queue order (never nil; empty when nothing holds or waits). socket is the
// --socket option, "" to discover; like Run it starts a per-user daemon if
// none runs, whose list is then empty. notices, when not nil, is told when
// connecting to an overloaded daemon takes a while. Failures wrap
// ErrUnavailable (and ErrOverloaded), ErrUnsafeDir, ErrVersion or ErrDaemon.
func List(ctx context.Context, socket string, notices io.Writer) ([]proto.Entry, error) {
	sock, err := Discover(socket)
	if err != nil {
		return nil, err
	}
	c, err := dial(ctx, sock, dialOpts{client: "wholock", waiting: noticeTo(notices, "wholock")})
	if err != nil {
		return nil, err
	}
	defer c.close()
	if err := c.send(proto.Msg{Type: proto.TList}); err != nil {
		return nil, fmt.Errorf("%w: send list: %w", ErrUnavailable, err)
	}
	entries := []proto.Entry{}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case r := <-c.msgs:
			if r.err != nil {
				return nil, fmt.Errorf("%w: read list: %s", ErrUnavailable, connErr(r.err))
			}
			switch r.msg.Type {
			case proto.TList:
				entries = append(entries, r.msg.Entries...)
				if !r.msg.More {
					return entries, nil
				}
				continue
			case proto.TError:
				return nil, fmt.Errorf("%w: %s: %s", ErrDaemon, r.msg.Code, printable(r.msg.Message))
			}
			return nil, fmt.Errorf("%w: unexpected %q message", ErrUnavailable, r.msg.Type)
		}
	}
}

// Cancel asks the daemon to cancel a job: a waiting request leaves the
// queue; a running job is stopped (SIGTERM, then SIGKILL). job is a job name
// as wholock shows it (x-42) or a ticket number. Only the job's owner or root
// may. notices is as for [List]. Failures wrap ErrDenied, ErrNoJob,
// ErrUnavailable or ErrDaemon.
func Cancel(ctx context.Context, socket, job string, notices io.Writer) error {
	sock, err := Discover(socket)
	if err != nil {
		return err
	}
	m := proto.Msg{Type: proto.TCancel, Job: job}
	if n, err := strconv.ParseUint(job, 10, 64); err == nil {
		m = proto.Msg{Type: proto.TCancel, Ticket: n}
	}
	c, err := dial(ctx, sock, dialOpts{client: "wholock", waiting: noticeTo(notices, "wholock")})
	if err != nil {
		return err
	}
	defer c.close()
	if err := c.send(m); err != nil {
		return fmt.Errorf("%w: send cancel: %w", ErrUnavailable, err)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case r := <-c.msgs:
		if r.err != nil {
			return fmt.Errorf("%w: read reply: %s", ErrUnavailable, connErr(r.err))
		}
		switch {
		case r.msg.Type == proto.TCancelled:
			return nil
		case r.msg.Type == proto.TError && r.msg.Code == proto.CodeDenied:
			return fmt.Errorf("%w: %s", ErrDenied, printable(r.msg.Message))
		case r.msg.Type == proto.TError && r.msg.Code == proto.CodeInvalid:
			return fmt.Errorf("%w: %s", ErrNoJob, printable(r.msg.Message))
		case r.msg.Type == proto.TError:
			return fmt.Errorf("%w: %s: %s", ErrDaemon, r.msg.Code, printable(r.msg.Message))
		}
		return fmt.Errorf("%w: unexpected %q message", ErrUnavailable, r.msg.Type)
	}
}
