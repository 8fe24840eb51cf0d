package daemon

import (
	"fmt"
	"slices"
	"time"

	"github.com/perflock/perflock/proto"
)

// A connection's writing side: messages queue in its outbox, and a writer
// goroutine, started only while there is something to write, sends them.

// send queues m for the client. Status updates replace one another; a
// client that lets more than maxOutbox messages pile up is dropped.
func (c *conn) send(m proto.Msg) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead || c.closeAfter {
		return
	}
	if n := len(c.outbox); n > 0 && m.Type == proto.TWaiting && c.outbox[n-1].Type == proto.TWaiting {
		c.outbox[n-1] = m
	} else {
		c.outbox = append(c.outbox, m)
	}
	if len(c.outbox) > maxOutbox {
		c.s.log.Warn("dropping a client that does not read", "pid", c.cred.Pid, "uid", c.cred.Uid, "queued", len(c.outbox))
		c.dead = true
		c.closing.Store(true)
		c.s.parker.unpark(c)
		c.nc.Close()
	}
	c.signal()
}

// finish queues m as the last message; the connection closes once written.
func (c *conn) finish(m proto.Msg) {
	c.send(m)
	c.mu.Lock()
	c.closeAfter = true
	c.signal()
	c.mu.Unlock()
}

// finishAll queues msgs, however many (a listing, bounded by the queue's
// size), as the last messages; the connection closes once they are written.
func (c *conn) finishAll(msgs []proto.Msg) { c.queueAll(msgs, true) }

// sendListing queues a watcher's listing (the loop queues one only when the
// last one is written, so the outbox holds at most one).
func (c *conn) sendListing(msgs []proto.Msg) { c.queueAll(msgs, false) }

// queueAll queues msgs whole, past maxOutbox; last closes the connection
// once they are written.
func (c *conn) queueAll(msgs []proto.Msg, last bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead || c.closeAfter {
		return
	}
	c.outbox = append(c.outbox, msgs...)
	c.closeAfter = last
	c.signal()
}

// signal starts the writer unless it runs; c.mu is held. A writer runs
// only while there is something to write: most waiters hear little, and
// 10,000 of them should not keep 10,000 idle goroutines.
func (c *conn) signal() {
	if !c.writing && !c.dead {
		c.writing = true
		c.s.goFn(c.write)
	}
}

func (c *conn) fail(code, format string, a ...any) {
	c.finish(proto.Msg{Type: proto.TError, Code: code, Message: fmt.Sprintf(format, a...)})
}

// write sends queued messages in order, and returns once the outbox is
// empty or the connection dead. A watcher's writes have no deadline: one
// that reads slowly is never dropped for it, and costs at most the listing
// being written; the loop hears when it is written.
func (c *conn) write() {
	// wroteList: this writer wrote a listing. Only then does it report the
	// watcher drained: one that wrote the hello alone and found the outbox
	// empty must not, for the loop may queue the first listing meanwhile
	// and would take the report for that listing's.
	wroteList := false
	for {
		c.mu.Lock()
		msgs, closeAfter, watching := c.outbox, c.closeAfter, c.watching
		c.outbox = nil
		if c.dead || (len(msgs) == 0 && !closeAfter) {
			c.writing = false
			drained := watching && wroteList && !c.dead
			c.mu.Unlock()
			if drained {
				c.s.post(func() { c.s.watchDrained(c) })
			}
			return
		}
		c.mu.Unlock()
		if !c.writeAll(msgs, watching) {
			return
		}
		wroteList = wroteList || slices.ContainsFunc(msgs, func(m proto.Msg) bool { return m.Type == proto.TList })
		if closeAfter && c.shut() {
			return
		}
	}
}

// writeAll writes msgs; false: the connection is dead.
func (c *conn) writeAll(msgs []proto.Msg, watching bool) bool {
	for _, m := range msgs {
		if watching {
			c.nc.SetWriteDeadline(time.Time{})
		} else {
			c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
		}
		if err := proto.Write(c.nc, m); err != nil {
			// Usually a client that left (broken pipe): nothing to warn of.
			c.s.log.Debug("writing to a client failed; dropping it", "pid", c.cred.Pid, "uid", c.cred.Uid, "type", m.Type, "err", err)
			c.kill()
			return false
		}
	}
	return true
}

// shut ends our side once everything is written, and lets the client read
// what we wrote: the reader then sees its EOF or error. False: more was
// queued meanwhile.
func (c *conn) shut() bool {
	c.mu.Lock()
	empty := len(c.outbox) == 0
	if empty {
		c.writing = false // all is written: this writer ends
	}
	c.mu.Unlock()
	if empty {
		c.nc.CloseWrite()
		c.nc.SetReadDeadline(time.Now().Add(handshakeTimeout))
		// A parked reader reads again, so that the deadline applies.
		c.closing.Store(true)
		c.s.parker.unpark(c)
	}
	return empty
}

func (c *conn) kill() {
	c.mu.Lock()
	c.dead = true
	c.mu.Unlock()
	c.closing.Store(true)
	c.s.parker.unpark(c)
	c.nc.Close()
}
