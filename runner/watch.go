package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/perflock/perflock/proto"
)

// Snapshot is what [Watch] reports: the whole queue after a change, or that
// the connection to the daemon is lost.
type Snapshot struct {
	// Entries is the queue as [List] returns it: holders in ticket order,
	// then waiters in queue order; nil when Lost is set.
	Entries []proto.Entry
	// Driver and Policy are the daemon's, from its hello ("" when Lost).
	Driver, Policy string
	// Received is when the listing arrived; Entries' ForMS were true then.
	Received time.Time
	// Lost, when not nil, says why the connection is lost or why the last
	// attempt to reconnect failed: Watch tries again every second.
	Lost error
}

// reconnectEvery is how often Watch tries to reach a lost daemon.
var reconnectEvery = time.Second

// Watch reports the daemon's queue to fn at once and again whenever it
// changes (the daemon sends at most about ten listings a second, and never
// a backlog: a slow fn misses intermediate states, not the latest). socket
// is the --socket option, "" to discover. The first connection is made like
// [List]'s: a per-user daemon is started if none runs, and notices is told
// when connecting to an overloaded daemon takes a while. When the connection
// is lost, fn hears so (Snapshot.Lost), and Watch reconnects every second,
// reporting each failed attempt; it does not start a daemon then, for one
// that went away was stopped or crashed, and the next perfrun or pls starts
// a per-user one again.
//
// Watch returns ctx.Err() once ctx is done, fn's error if fn fails, or an
// error wrapping ErrUnavailable, ErrUnsafeDir, ErrVersion or ErrDaemon when
// the first connection fails or the daemon refuses to be watched.
func Watch(ctx context.Context, socket string, notices io.Writer, fn func(Snapshot) error) error {
	sock, err := Discover(socket)
	if err != nil {
		return err
	}
	c, err := dial(ctx, sock, dialOpts{client: "wholock", waiting: noticeTo(notices, "wholock")})
	if err != nil {
		return err
	}
	for {
		err := watchConn(ctx, c, fn)
		c.close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var lost lostError
		if !errors.As(err, &lost) {
			return err
		}
		if err := fn(Snapshot{Lost: lost.err}); err != nil {
			return err
		}
		if c, err = rewatch(ctx, socket, fn); err != nil {
			return err
		}
	}
}

// lostError: the connection broke; Watch reconnects.
type lostError struct{ err error }

func (e lostError) Error() string { return e.err.Error() }

// watchConn asks c for the queue and reports each listing to fn until the
// connection breaks (a lostError), ctx is done, the daemon answers an
// error, or fn fails.
func watchConn(ctx context.Context, c *conn, fn func(Snapshot) error) error {
	if err := c.send(proto.Msg{Type: proto.TWatch}); err != nil {
		return lostError{fmt.Errorf("send watch: %w", err)}
	}
	var entries []proto.Entry
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case r := <-c.msgs:
			if r.err != nil {
				return lostError{errors.New("perflockd " + connErrShort(r.err))}
			}
			switch r.msg.Type {
			case proto.TList:
				entries = append(entries, r.msg.Entries...)
				if r.msg.More {
					continue
				}
				s := Snapshot{Entries: entries, Driver: c.hello.Driver, Policy: c.hello.Policy, Received: time.Now()}
				if s.Entries == nil {
					s.Entries = []proto.Entry{}
				}
				entries = nil
				if err := fn(s); err != nil {
					return err
				}
			case proto.TError:
				hint := ""
				if r.msg.Code == proto.CodeInvalid {
					hint = " (a perflockd older than this wholock cannot be watched: upgrade and restart it)"
				}
				return fmt.Errorf("%w: %s: %s%s", ErrDaemon, r.msg.Code, printable(r.msg.Message), hint)
			default:
				return fmt.Errorf("%w: unexpected %q message while watching", ErrUnavailable, r.msg.Type)
			}
		}
	}
}

// connErrShort is connErr for the watch view's header.
func connErrShort(err error) string {
	s := connErr(err)
	if s == "it closed the connection" {
		return "closed the connection"
	}
	return "connection: " + s
}

// rewatch reconnects every reconnectEvery, without starting a daemon,
// telling fn of each failure, until it connects or ctx is done. Only a
// version mismatch is final.
func rewatch(ctx context.Context, socket string, fn func(Snapshot) error) (*conn, error) {
	t := time.NewTimer(reconnectEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
		t.Reset(reconnectEvery)
		sock, err := Discover(socket)
		if err == nil {
			var c *conn
			// Not started, and a full listen queue is retried for a
			// second at most: fn hears of each failed attempt.
			if c, err = dial(ctx, sock, dialOpts{client: "wholock", noStart: true, busyFor: reconnectEvery}); err == nil {
				return c, nil
			}
			if errors.Is(err, ErrVersion) {
				return nil, err
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err := fn(Snapshot{Lost: err}); err != nil {
			return nil, err
		}
	}
}
