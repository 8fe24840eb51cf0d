package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/perflock/perflock/internal/atomicfile"
)

// historyFile is the name of the job history in the state directory.
const historyFile = "history.json"

// The history's bounds: a completion is remembered for historyMaxAge, and
// of historyMaxPerUser keys of one user, or historyMaxTotal in all, the
// oldest are forgotten first.
const (
	historyMaxAge     = 30 * 24 * time.Hour
	historyMaxPerUser = 1000
	historyMaxTotal   = 10000
)

// The history is written off the loop, at most every historySaveEvery; a
// write that failed is tried again, backing off up to historyRetryMax.
// historyAgePruneEvery is how often recording scans for old entries.
const (
	historySaveEvery     = time.Second
	historyRetryMax      = time.Minute
	historyAgePruneEvery = time.Hour
)

// history remembers, per user and key, when a keyed job last completed
// successfully (perfrun --key, --if-elapsed), and keeps it in a JSON file
// so that it survives restarts.
//
// The loop alone changes it (record) and reads it (lastSuccess); the
// writer (run) saves it in a goroutine of its own, so that a slow or
// failing disk never holds up the loop: changes made while a write is in
// flight go out together in the next one, with the latest content. flush
// saves what is left once the writer has stopped.
type history struct {
	path string
	log  *slog.Logger
	kick chan struct{} // capacity 1: something changed since the writer last looked

	mu     sync.Mutex // guards the fields below; the writer only reads them
	last   map[uint32]map[string]time.Time
	n      int       // entries in last
	gen    uint64    // changes so far
	saved  uint64    // the change the file holds
	pruned time.Time // the last scan for old entries
	write  func(path string, b []byte) error

	saveMu  sync.Mutex // one write at a time: the writer's, or flush's
	failing bool       // the last write failed (saveMu)
}

// historyDoc is the file's format.
type historyDoc struct {
	// Completed maps "UID/KEY" to the Unix time in milliseconds of the
	// key's last successful completion.
	Completed map[string]int64 `json:"completed"`
}

func historyKey(uid uint32, key string) string {
	return strconv.FormatUint(uint64(uid), 10) + "/" + key
}

func newHistory(path string, log *slog.Logger) *history {
	return &history{
		path: path, log: log, kick: make(chan struct{}, 1),
		last:  make(map[uint32]map[string]time.Time),
		write: func(path string, b []byte) error { return atomicfile.WriteFile(path, b, 0o644) },
	}
}

// loadHistory reads the history in dir, creating dir if need be. It always
// returns a history to serve with, saying what went wrong: a missing file
// is an empty history; where dir cannot be made or the file cannot be
// read, the history starts empty and is saved once it can be; a file that
// is not the daemon's own (readStateFile) or cannot be parsed is moved
// aside, to history.json.bad-TIME, and the history starts empty.
func loadHistory(dir string, log *slog.Logger) *history {
	h := newHistory(filepath.Join(dir, historyFile), log)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Warn("cannot make the state directory: the history of keyed jobs (--key, --if-elapsed) starts empty, kept in memory until it can be saved",
			"dir", dir, "err", err)
		return h
	}
	b, err := readStateFile(h.path)
	if errors.Is(err, fs.ErrNotExist) {
		return h
	}
	if err != nil && !errors.Is(err, errUntrusted) {
		log.Warn("cannot read the history of keyed jobs: it starts empty, and replaces the file at the next keyed completion", "err", err)
		return h
	}
	var doc historyDoc
	if err == nil {
		if err = json.Unmarshal(b, &doc); err != nil {
			err = fmt.Errorf("daemon: history %s cannot be parsed: %w", h.path, err)
		}
	}
	if err != nil {
		aside := h.path + ".bad-" + time.Now().UTC().Format("20060102T150405Z")
		if rerr := os.Rename(h.path, aside); rerr != nil {
			log.Warn("ignoring the history of keyed jobs, which cannot be moved aside: it starts empty, and replaces the file at the next keyed completion",
				"why", err, "err", rerr)
		} else {
			log.Warn("moved the history of keyed jobs aside: it starts empty (--if-elapsed runs each key once more)", "why", err, "moved_to", aside)
		}
		return h
	}
	h.load(doc, time.Now())
	return h
}

// load takes the entries of doc within the bounds: the newest first, until
// a user's or the total bound is reached; too old or unreadable entries are
// left out.
func (h *history) load(doc historyDoc, now time.Time) {
	type entry struct {
		uid uint32
		key string
		at  time.Time
	}
	es := make([]entry, 0, len(doc.Completed))
	for k, ms := range doc.Completed {
		u, key, ok := strings.Cut(k, "/")
		uid, err := strconv.ParseUint(u, 10, 32)
		if at := time.UnixMilli(ms); ok && err == nil && key != "" && now.Sub(at) <= historyMaxAge {
			es = append(es, entry{uint32(uid), key, at})
		}
	}
	slices.SortFunc(es, func(a, b entry) int { return b.at.Compare(a.at) })
	for _, e := range es {
		if h.n == historyMaxTotal {
			break
		}
		if len(h.last[e.uid]) < historyMaxPerUser {
			h.set(e.uid, e.key, e.at)
		}
	}
	h.pruned = now
	if h.n < len(doc.Completed) {
		h.log.Info("pruned the history of keyed jobs", "file", h.path, "entries", len(doc.Completed), "kept", h.n)
	}
}

// lastSuccess returns when uid's key last completed successfully. Loop.
func (h *history) lastSuccess(uid uint32, key string) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.last[uid][key]
	return t, ok
}

// record notes a successful completion at now, prunes, and has the writer
// save it soon. It does no I/O. Loop.
func (h *history) record(uid uint32, key string, now time.Time) {
	h.mu.Lock()
	h.set(uid, key, now)
	if u := h.last[uid]; len(u) > historyMaxPerUser {
		h.drop(uid, oldest(u))
	}
	h.prune(now, now.Sub(h.pruned) >= historyAgePruneEvery)
	h.gen++
	h.mu.Unlock()
	select {
	case h.kick <- struct{}{}:
	default: // the writer has yet to look: it will see this change too
	}
}

// set notes one entry.
func (h *history) set(uid uint32, key string, at time.Time) {
	u := h.last[uid]
	if u == nil {
		u = make(map[string]time.Time)
		h.last[uid] = u
	}
	if _, ok := u[key]; !ok {
		h.n++
	}
	u[key] = at
}

// prune forgets entries older than historyMaxAge (when byAge: a scan of
// the whole history), then the oldest beyond historyMaxTotal (one scan
// each: record adds one at a time).
func (h *history) prune(now time.Time, byAge bool) {
	if byAge {
		h.pruned = now
		for uid, u := range h.last {
			for k, t := range u {
				if now.Sub(t) > historyMaxAge {
					h.drop(uid, k)
				}
			}
		}
	}
	for h.n > historyMaxTotal {
		var ou uint32
		var ok string
		var ot time.Time
		for uid, u := range h.last {
			if k := oldest(u); ok == "" || u[k].Before(ot) {
				ou, ok, ot = uid, k, u[k]
			}
		}
		h.drop(ou, ok)
	}
}

func (h *history) drop(uid uint32, key string) {
	u := h.last[uid]
	if _, ok := u[key]; !ok {
		return
	}
	delete(u, key)
	h.n--
	if len(u) == 0 {
		delete(h.last, uid)
	}
}

// oldest is the key of u completed longest ago; "" when u is empty.
func oldest(u map[string]time.Time) string {
	var ok string
	var ot time.Time
	for k, t := range u {
		if ok == "" || t.Before(ot) {
			ok, ot = k, t
		}
	}
	return ok
}

// run is the writer: it saves the history after each change, at most every
// historySaveEvery, and tries again after a failure, until ctx is done.
func (h *history) run(ctx context.Context) {
	timer := time.NewTimer(0)
	<-timer.C
	var last time.Time // the last write's start
	retry := time.Duration(0)
	waiting := false // timer is set: a write is due when it fires
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-h.kick:
			if waiting {
				continue
			}
			if d := historySaveEvery - time.Since(last); d > 0 {
				timer.Reset(d)
				waiting = true
				continue
			}
		case <-timer.C:
			waiting = false
		}
		last = time.Now()
		if err := h.save(); err != nil {
			retry = min(max(2*retry, historySaveEvery), historyRetryMax)
			timer.Reset(retry)
			waiting = true
		} else {
			retry = 0
		}
	}
}

// flush saves the history if it changed since the last write. The daemon
// calls it once the writer has stopped; it may be called on a nil history.
func (h *history) flush() {
	if h == nil {
		return
	}
	if err := h.save(); err != nil {
		h.log.Error("could not save the history of keyed jobs before stopping: the completions since its last save are forgotten (--if-elapsed runs those jobs again)",
			"file", h.path, "err", err)
	}
}

// save writes the latest content, unless the file holds it already. The
// first failure of a run of them is logged, and the save that ends it.
func (h *history) save() error {
	h.saveMu.Lock()
	defer h.saveMu.Unlock()
	type entry struct {
		uid uint32
		key string
		ms  int64
	}
	h.mu.Lock()
	gen, write := h.gen, h.write
	if gen == h.saved {
		h.mu.Unlock()
		return nil
	}
	es := make([]entry, 0, h.n)
	for uid, u := range h.last {
		for k, t := range u {
			es = append(es, entry{uid, k, t.UnixMilli()})
		}
	}
	h.mu.Unlock()
	doc := historyDoc{Completed: make(map[string]int64, len(es))}
	for _, e := range es {
		doc.Completed[historyKey(e.uid, e.key)] = e.ms
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err == nil {
		err = write(h.path, append(b, '\n'))
	}
	if err != nil {
		if !h.failing {
			h.log.Warn("cannot save the history of keyed jobs: it is kept in memory and saved again later; if perflockd stops before, the completions since are forgotten (--if-elapsed runs those jobs again)",
				"file", h.path, "err", err)
		}
		h.failing = true
		return fmt.Errorf("daemon: history: %w", err)
	}
	if h.failing {
		h.log.Info("saved the history of keyed jobs again", "file", h.path)
	}
	h.failing = false
	h.mu.Lock()
	h.saved = gen
	h.mu.Unlock()
	return nil
}

// agoString renders d for messages: "45s", "3m", "2h5m", "3d".
func agoString(d time.Duration) string {
	switch {
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	case d < 24*time.Hour:
		s := strconv.Itoa(int(d/time.Hour)) + "h"
		if m := int(d % time.Hour / time.Minute); m > 0 {
			s += strconv.Itoa(m) + "m"
		}
		return s
	}
	return strconv.Itoa(int(d/(24*time.Hour))) + "d"
}

// durString renders a flag's duration as the user would write it: "1h",
// "90m", "30s".
func durString(d time.Duration) string {
	s := d.String()
	for _, suf := range []string{"m0s", "h0m"} {
		for len(s) > len(suf) && s[len(s)-len(suf):] == suf {
			s = s[:len(s)-2]
		}
	}
	return s
}
