// Package atomicfile writes files so that a reader, or a daemon restarted
// after a crash, sees the old contents or the new, never a mix.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile writes b to path with permissions perm: into a temporary file in
// the same directory, synced, then renamed over path, and the directory
// synced so the rename survives a crash. On error path is unchanged and no
// temporary file is left.
func WriteFile(path string, b []byte, perm os.FileMode) error {
	return write(path, b, perm, true)
}

// Replace is WriteFile without the syncs, for files that describe this boot
// only (running jobs, waiting requests): a crashed daemon's writes are in the
// page cache for the next one to read, and a crashed machine has none of the
// jobs they describe. A reader still sees the old contents or the new. The
// syncs cost a job about a millisecond on a disk.
func Replace(path string, b []byte, perm os.FileMode) error {
	return write(path, b, perm, false)
}

func write(path string, b []byte, perm os.FileMode, sync bool) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("atomicfile: write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("atomicfile: write %s: %w", path, err)
	}
	if !sync {
		return nil
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
