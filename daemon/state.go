package daemon

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/perflock/perflock/internal/atomicfile"
	"github.com/perflock/perflock/lockq"
)

// ticketBlock is how many tickets the daemon reserves on disk at a time.
const ticketBlock = 1024

// runState is what outlives one daemon process, in the runtime directory
// beside the socket:
//   - tickets: the ticket high-water mark, reserved a block ahead, so that a
//     restarted daemon hands out only larger tickets; and how many requests
//     were waiting when the daemon stopped cleanly ("-" while it runs, so a
//     crash reads as "maybe some");
//   - key: a secret for the tokens that let a waiting client rejoin with its
//     old ticket, and only its own.
type runState struct {
	dir      string
	key      []byte
	started  lockq.Ticket // the high-water mark found at start
	reserved lockq.Ticket
	waiters  int // waiting at the last clean stop; -1: unknown (crash)
}

// loadRunState reads (or creates) the state in dir and reserves tickets.
// It believes only files that are its own (readStateFile): a key that is
// not is replaced by a fresh one, a ticket mark that is not is ignored;
// either is logged.
func loadRunState(dir string, log *slog.Logger) (*runState, error) {
	st := &runState{dir: dir, waiters: 0}
	keyPath := filepath.Join(dir, "key")
	key, err := readStateFile(keyPath)
	switch {
	case err == nil && len(key) >= 16:
		st.key = key
	case err == nil:
		log.Warn("the rejoin key is too short: making a new one; clients that waited on an earlier perflockd cannot rejoin their place", "file", keyPath)
	case errors.Is(err, errUntrusted):
		log.Warn("not using a rejoin key that is not perflockd's own: making a new one; clients that waited on an earlier perflockd cannot rejoin their place", "err", err)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("daemon: state key: %w", err)
	}
	if st.key == nil {
		st.key = make([]byte, 32)
		if _, err := rand.Read(st.key); err != nil {
			return nil, fmt.Errorf("daemon: state key: %w", err)
		}
		if err := atomicfile.WriteFile(keyPath, st.key, 0o600); err != nil {
			return nil, err
		}
	}
	ticketsPath := filepath.Join(dir, "tickets")
	b, err := readStateFile(ticketsPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case errors.Is(err, errUntrusted):
		log.Warn("ignoring a ticket mark that is not perflockd's own; clients that waited on an earlier perflockd cannot rejoin their place", "err", err)
	case err != nil:
		return nil, fmt.Errorf("daemon: state: %w", err)
	default:
		f := strings.Fields(string(b))
		if len(f) != 2 {
			return nil, fmt.Errorf("daemon: state %s: malformed", ticketsPath)
		}
		hw, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("daemon: state %s: %w", ticketsPath, err)
		}
		st.started = lockq.Ticket(hw)
		if st.waiters, err = strconv.Atoi(f[1]); err != nil {
			st.waiters = -1
		}
	}
	if err := st.reserve(st.started); err != nil {
		return nil, err
	}
	return st, nil
}

// reserve keeps the mark on disk ahead of last, the last ticket handed out:
// it extends it by a block once less than half a block is left.
func (st *runState) reserve(last lockq.Ticket) error {
	if last+ticketBlock/2 < st.reserved {
		return nil
	}
	st.reserved = last + ticketBlock
	return st.write(st.reserved, "-")
}

// stop records a clean stop with n requests waiting.
func (st *runState) stop(n int) error {
	return st.write(st.reserved, strconv.Itoa(n))
}

func (st *runState) write(hw lockq.Ticket, waiters string) error {
	return atomicfile.WriteFile(filepath.Join(st.dir, "tickets"), []byte(fmt.Sprintf("%d %s\n", hw, waiters)), 0o600)
}

// token is the secret a waiting client keeps to rejoin with ticket t.
func (st *runState) token(t lockq.Ticket, uid uint32) string {
	m := hmac.New(sha256.New, st.key)
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], uint64(t))
	binary.BigEndian.PutUint32(b[8:], uid)
	m.Write(b[:])
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// canRejoin: t was handed out before this daemon started, to uid.
func (st *runState) canRejoin(t lockq.Ticket, uid uint32, token string) bool {
	return t > 0 && t <= st.started && hmac.Equal([]byte(token), []byte(st.token(t, uid)))
}
