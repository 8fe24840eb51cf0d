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
	"time"

	"github.com/perflock/perflock/internal/atomicfile"
	"github.com/perflock/perflock/lockq"
)

// ticketBlock is how many tickets the daemon reserves on disk at a time.
const ticketBlock = 1024

// stateRetry is how long the daemon waits before it tries again to save a
// ticket mark or key that it could not save (a full or read-only folder).
var stateRetry = 10 * time.Second

// unsavedCost says what an unsaved ticket mark or key costs.
const unsavedCost = "after a restart, clients waiting then cannot rejoin their place in line (their rejoin is refused), and job numbers may repeat"

// runState is what outlives one daemon process, in the runtime directory
// beside the socket:
//   - tickets: the ticket high-water mark, reserved a block ahead, so that a
//     restarted daemon hands out only larger tickets; and how many requests
//     were waiting when the daemon stopped cleanly ("-" while it runs, so a
//     crash reads as "maybe some");
//   - key: a secret for the tokens that let a waiting client rejoin with its
//     old ticket, and only its own.
//
// Neither is needed to serve: where they cannot be saved (a full or
// read-only folder), the daemon says what that costs, serves, and tries
// again every stateRetry.
type runState struct {
	dir      string
	log      *slog.Logger
	key      []byte
	started  lockq.Ticket // the high-water mark found at start
	reserved lockq.Ticket // the mark to keep on disk
	saved    lockq.Ticket // the mark on disk, as this daemon saved it; 0: none yet
	keySaved bool
	failed   time.Time // when saving last failed; zero while saving works
	waiters  int       // waiting at the last clean stop; -1: unknown (crash)
}

// loadRunState reads the state in dir, or makes it, and reserves tickets.
// It believes only files that are its own (readStateFile): a key that is
// not, or cannot be read, is replaced by a fresh one; a ticket mark that
// is not, or cannot be read, is ignored. What it cannot save, it keeps in
// memory and saves later (reserve). Each is logged; the error is only for
// a key that cannot be made.
func loadRunState(dir string, log *slog.Logger) (*runState, error) {
	st := &runState{dir: dir, log: log}
	keyPath := filepath.Join(dir, "key")
	key, err := readStateFile(keyPath)
	switch {
	case err == nil && len(key) >= 16:
		st.key, st.keySaved = key, true
	case err == nil:
		log.Warn("the rejoin key is too short: making a new one; clients that waited on an earlier perflockd cannot rejoin their place", "file", keyPath)
	case errors.Is(err, errUntrusted):
		log.Warn("not using a rejoin key that is not perflockd's own: making a new one; clients that waited on an earlier perflockd cannot rejoin their place", "err", err)
	case !errors.Is(err, fs.ErrNotExist):
		log.Warn("cannot read the rejoin key: making a new one; clients that waited on an earlier perflockd cannot rejoin their place", "err", err)
	}
	if st.key == nil {
		st.key = make([]byte, 32)
		if _, err := rand.Read(st.key); err != nil {
			return nil, fmt.Errorf("daemon: making a rejoin key: %w", err)
		}
	}
	ticketsPath := filepath.Join(dir, "tickets")
	b, err := readStateFile(ticketsPath)
	if err == nil {
		err = st.parseTickets(b)
	}
	switch {
	case err == nil, errors.Is(err, fs.ErrNotExist):
	case errors.Is(err, errUntrusted):
		log.Warn("ignoring a ticket mark that is not perflockd's own; clients that waited on an earlier perflockd cannot rejoin their place", "err", err)
	default:
		log.Warn("ignoring a ticket mark that cannot be read; clients that waited on an earlier perflockd cannot rejoin their place", "err", err)
	}
	if err := st.reserve(st.started); err != nil {
		log.Warn("serving without saving the ticket mark or rejoin key", "err", err)
	}
	return st, nil
}

// parseTickets reads the tickets file's "MARK WAITERS".
func (st *runState) parseTickets(b []byte) error {
	path := filepath.Join(st.dir, "tickets")
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return fmt.Errorf("daemon: state %s: malformed", path)
	}
	hw, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return fmt.Errorf("daemon: state %s: %w", path, err)
	}
	st.started = lockq.Ticket(hw)
	if st.waiters, err = strconv.Atoi(f[1]); err != nil {
		st.waiters = -1
	}
	return nil
}

// reserve keeps the mark on disk ahead of last, the last ticket handed out:
// it extends it by a block once less than half a block is left. Where
// saving fails, it tries again every stateRetry; the error is only for the
// first failure of a run of them (the cost said), and the save that ends
// them is logged.
func (st *runState) reserve(last lockq.Ticket) error {
	if last+ticketBlock/2 >= st.reserved {
		st.reserved = last + ticketBlock
	}
	if st.saved == st.reserved && st.keySaved {
		return nil
	}
	if !st.failed.IsZero() && time.Since(st.failed) < stateRetry {
		return nil
	}
	first := st.failed.IsZero()
	if err := st.save("-"); err != nil {
		if first {
			return err
		}
		return nil
	}
	if !first {
		st.log.Info("saved the ticket mark and rejoin key again", "dir", st.dir)
	}
	return nil
}

// stop records a clean stop with n requests waiting.
func (st *runState) stop(n int) error {
	return st.save(strconv.Itoa(n))
}

// save writes the key, unless saved, and the mark with waiters. A failure
// says what it costs.
func (st *runState) save(waiters string) error {
	var errs []error
	if !st.keySaved {
		if err := atomicfile.WriteFile(filepath.Join(st.dir, "key"), st.key, 0o600); err != nil {
			errs = append(errs, err)
		} else {
			st.keySaved = true
		}
	}
	err := atomicfile.Replace(filepath.Join(st.dir, "tickets"), []byte(fmt.Sprintf("%d %s\n", st.reserved, waiters)), 0o600)
	if err != nil {
		errs = append(errs, err)
	} else {
		st.saved = st.reserved
	}
	if len(errs) > 0 {
		st.failed = time.Now()
		return fmt.Errorf("daemon: cannot save the ticket mark or rejoin key (%w): %s; trying again every %v", errors.Join(errs...), unsavedCost, stateRetry)
	}
	st.failed = time.Time{}
	return nil
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
