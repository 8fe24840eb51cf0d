package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/perflock/perflock/internal/atomicfile"
)

// historyFile is the name of the job history in the state directory.
const historyFile = "history.json"

// historyMaxAge: entries older than this are pruned when the history is
// written.
const historyMaxAge = 30 * 24 * time.Hour

// history remembers, per user and key, when a keyed job last completed
// successfully (perfrun --key, --if-elapsed). It is kept in a JSON file,
// written atomically, so that it survives restarts. Loop-owned.
type history struct {
	path string
	// last maps "UID/KEY" to the last successful completion.
	last map[string]time.Time
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

// loadHistory reads the history in dir, creating dir if need be; a missing
// file is an empty history.
func loadHistory(dir string) (*history, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("daemon: state directory: %w", err)
	}
	h := &history{path: filepath.Join(dir, historyFile), last: make(map[string]time.Time)}
	b, err := os.ReadFile(h.path)
	if errors.Is(err, os.ErrNotExist) {
		return h, nil
	}
	if err != nil {
		return nil, fmt.Errorf("daemon: history: %w", err)
	}
	var doc historyDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("daemon: history %s: %w", h.path, err)
	}
	for k, ms := range doc.Completed {
		h.last[k] = time.UnixMilli(ms)
	}
	return h, nil
}

// lastSuccess returns when uid's key last completed successfully.
func (h *history) lastSuccess(uid uint32, key string) (time.Time, bool) {
	t, ok := h.last[historyKey(uid, key)]
	return t, ok
}

// record notes a successful completion at now, prunes old entries and
// writes the file.
func (h *history) record(uid uint32, key string, now time.Time) error {
	h.last[historyKey(uid, key)] = now
	doc := historyDoc{Completed: make(map[string]int64, len(h.last))}
	for k, t := range h.last {
		if now.Sub(t) > historyMaxAge {
			delete(h.last, k)
			continue
		}
		doc.Completed[k] = t.UnixMilli()
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("daemon: history: %w", err)
	}
	return atomicfile.WriteFile(h.path, append(b, '\n'), 0o644)
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
