package runner

import (
	"context"
	"fmt"

	"github.com/perflock/perflock/proto"
)

// List returns the daemon's queue: holders in ticket order, then waiters in
// queue order (never nil; empty when nothing holds or waits). socket is the
// --socket option, "" to discover; like Run it starts a per-user daemon if
// none runs, whose list is then empty. Failures wrap ErrUnavailable,
// ErrUnsafeDir, ErrVersion or ErrDaemon.
func List(ctx context.Context, socket string) ([]proto.Entry, error) {
	sock, err := Discover(socket)
	if err != nil {
		return nil, err
	}
	c, err := dial(ctx, sock, "wholock")
	if err != nil {
		return nil, err
	}
	defer c.close()
	if err := c.send(proto.Msg{Type: proto.TList}); err != nil {
		return nil, fmt.Errorf("%w: send list: %w", ErrUnavailable, err)
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-c.msgs:
		if r.err != nil {
			return nil, fmt.Errorf("%w: read list: %s", ErrUnavailable, connErr(r.err))
		}
		switch r.msg.Type {
		case proto.TList:
			if r.msg.Entries == nil {
				return []proto.Entry{}, nil
			}
			return r.msg.Entries, nil
		case proto.TError:
			return nil, fmt.Errorf("%w: %s: %s", ErrDaemon, r.msg.Code, printable(r.msg.Message))
		}
		return nil, fmt.Errorf("%w: unexpected %q message", ErrUnavailable, r.msg.Type)
	}
}
