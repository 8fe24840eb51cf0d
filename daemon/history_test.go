package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The history survives a reload, is per user and key, prunes entries older
// than 30 days when written, and leaves no temporary file behind.
func TestHistoryRecordsReloadsAndPrunes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	h, err := loadHistory(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := h.record(1000, "old", now.Add(-31*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := h.record(1000, "nightly", now); err != nil {
		t.Fatal(err)
	}
	h2, err := loadHistory(dir)
	if err != nil {
		t.Fatal(err)
	}
	if last, ok := h2.lastSuccess(1000, "nightly"); !ok || last.UnixMilli() != now.UnixMilli() {
		t.Errorf("nightly after reload: %v %v, want %v", last, ok, now)
	}
	if _, ok := h2.lastSuccess(1001, "nightly"); ok {
		t.Error("another user's key counted")
	}
	if _, ok := h2.lastSuccess(1000, "old"); ok {
		t.Error("an entry older than 30 days was kept")
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}

func TestHistoryDurationsReadLikeFlags(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Hour: "1h", 90 * time.Minute: "1h30m", 30 * time.Second: "30s", 10 * time.Minute: "10m", 1500 * time.Millisecond: "1.5s",
	} {
		if got := durString(d); got != want {
			t.Errorf("durString(%v) = %q, want %q", d, got, want)
		}
	}
	for d, want := range map[time.Duration]string{
		3*time.Minute + 5*time.Second: "3m", 42 * time.Second: "42s", 2*time.Hour + 5*time.Minute: "2h5m", 50 * time.Hour: "2d",
	} {
		if got := agoString(d); got != want {
			t.Errorf("agoString(%v) = %q, want %q", d, got, want)
		}
	}
}
