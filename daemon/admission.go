package daemon

import (
	"fmt"
	"sync"
	"time"

	"github.com/perflock/perflock/daemon/core"
	"github.com/perflock/perflock/proto"
)

// The accept goroutine admits connections by itself, never waiting for
// the loop: it counts the open ones, in all and per user, and refuses one
// over a limit at once. A flood of connections from one user then neither
// fills the listen backlog for everybody else nor reaches the loop.
type admission struct {
	mu       sync.Mutex
	total    int
	by       map[uint32]int
	refusing int // refusals being written
}

// maxRefusing bounds the refusals written at once; beyond it a refused
// connection is closed without a word.
const maxRefusing = 64

// admit counts a connection of uid in, unless a limit is reached; it says
// how many are open.
func (a *admission) admit(uid uint32, maxTotal, maxUser int) (ok bool, total, ofUser int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.total >= maxTotal || a.by[uid] >= maxUser {
		return false, a.total, a.by[uid]
	}
	a.total++
	a.by[uid]++
	return true, a.total, a.by[uid]
}

// leave counts a connection of uid out.
func (a *admission) leave(uid uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total--
	if a.by[uid]--; a.by[uid] <= 0 {
		delete(a.by, uid)
	}
}

func (s *server) accept() {
	for {
		nc, err := s.ln.AcceptUnix()
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Error("accept failed; no new connections", "err", err)
			}
			return
		}
		cred, err := peerCred(nc)
		if err != nil {
			s.log.Warn("connection without peer credentials", "err", err)
			nc.Close()
			continue
		}
		c := newConn(s, core.ConnID(s.connID.Add(1)), nc, cred)
		if ok, total, ofUser := s.adm.admit(cred.Uid, s.cfg.MaxConns, s.cfg.MaxConnsPerUser); !ok {
			s.refuse(c, total, ofUser)
			continue
		}
		s.goFn(c.read) // it registers with the loop first; the writer starts when there is something to write
	}
}

// refuse answers a connection over a limit with a "limit" error, off the
// accept goroutine, and lets the client write its hello and read the
// answer before it closes (a client that wrote to a closed socket would
// see a broken pipe, not why).
func (s *server) refuse(c *conn, total, ofUser int) {
	s.log.Warn("connection refused: limit reached", "uid", c.cred.Uid, "pid", c.cred.Pid, "conns", total, "of_user", ofUser)
	s.adm.mu.Lock()
	busy := s.adm.refusing >= maxRefusing
	if !busy {
		s.adm.refusing++
	}
	s.adm.mu.Unlock()
	if busy {
		c.stopOnClose()
		c.nc.Close()
		return
	}
	s.goFn(func() {
		defer func() {
			s.adm.mu.Lock()
			s.adm.refusing--
			s.adm.mu.Unlock()
			c.stopOnClose()
			c.nc.Close()
		}()
		c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		proto.Write(c.nc, proto.Msg{Type: proto.TError, Code: proto.CodeLimit,
			Message: fmt.Sprintf("perflockd has too many connections (%d open, %d of this user): try again later", total, ofUser)})
		c.nc.CloseWrite()
		c.drain()
	})
}
