package ownfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestReadsOnlyTheProcesssOwnFile(t *testing.T) {
	dir := t.TempDir()
	own := filepath.Join(dir, "own")
	if err := os.WriteFile(own, []byte("state"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := Read(own); err != nil || string(b) != "state" {
		t.Fatalf("Read(own) = %q, %v", b, err)
	}
	if _, err := Read(filepath.Join(dir, "absent")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read(absent): %v, want fs.ErrNotExist", err)
	}

	link := filepath.Join(dir, "link")
	os.Symlink(own, link)
	hard := filepath.Join(dir, "hard")
	os.Link(own, filepath.Join(dir, "hard"))
	writable := filepath.Join(dir, "writable")
	os.WriteFile(writable, []byte("x"), 0o644)
	os.Chmod(writable, 0o666)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{link, hard, writable, fifo, dir} {
		if _, err := Read(p); !errors.Is(err, ErrUntrusted) {
			t.Errorf("Read(%s): %v, want ErrUntrusted", filepath.Base(p), err)
		}
	}
}

func TestAnotherUsersFileIsUntrusted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a file of another user")
	}
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, []byte("x"), 0o644)
	if err := os.Chown(p, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(p); !errors.Is(err, ErrUntrusted) {
		t.Errorf("Read of a file of uid 65534: %v, want ErrUntrusted", err)
	}
}
