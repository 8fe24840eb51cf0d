package cgroup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Interface files of cgroup2 used here.
const (
	eventsFile  = "cgroup.events"
	freezeFile  = "cgroup.freeze"
	killFile    = "cgroup.kill"
	procsFile   = "cgroup.procs"
	subtreeFile = "cgroup.subtree_control"
	cpuStatFile = "cpu.stat"
)

// writeFile writes s to an existing cgroup interface file in one write(2), without creating or
// truncating: cgroupfs takes each write as one command.
func writeFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, werr := f.WriteString(s)
	cerr := f.Close()
	return errors.Join(werr, cerr)
}

// readEvents reads and parses dir/cgroup.events.
func readEvents(dir string) (events, error) {
	path := filepath.Join(dir, eventsFile)
	f, err := os.Open(path)
	if err != nil {
		return events{}, err
	}
	defer f.Close()
	ev, err := parseEvents(f)
	if err != nil {
		return events{}, fmt.Errorf("%s: %w", path, err)
	}
	return ev, nil
}

// ReadPids returns the processes in the cgroup directory dir (its cgroup.procs).
func ReadPids(dir string) ([]int, error) {
	path := filepath.Join(dir, procsFile)
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	pids, err := parsePids(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return pids, nil
}

// waitEvents blocks until dir/cgroup.events satisfies done, and returns nil then. It returns the
// error of reading the file if that fails (fs.ErrNotExist once the cgroup is removed), and
// ctx.Err(), wrapped, once ctx is done first.
//
// It is driven by inotify, not polling: the kernel reports IN_MODIFY on cgroup.events whenever
// "populated" or "frozen" changes. The watch is added before the first read, so no change between
// the read and the wait is missed. The inotify descriptor is closed, and nothing started here is
// still running, when waitEvents returns.
func waitEvents(ctx context.Context, dir string, done func(events) bool) error {
	path := filepath.Join(dir, eventsFile)
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return fmt.Errorf("cgroup: inotify for %s: %w", path, err)
	}
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_MODIFY); err != nil {
		unix.Close(fd)
		return &fs.PathError{Op: "inotify_add_watch", Path: path, Err: err}
	}
	// A non-blocking descriptor becomes a pollable *os.File: reads park in the runtime poller and
	// honour read deadlines, which is how ctx interrupts them.
	w := os.NewFile(uintptr(fd), "inotify")
	defer w.Close()
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		w.SetReadDeadline(time.Now())
	})
	defer func() {
		if !stop() {
			<-fired
		}
	}()

	buf := make([]byte, 4096) // room for many events; a watched file's events carry no name
	for {
		ev, err := readEvents(dir)
		if err != nil {
			return err
		}
		if done(ev) {
			return nil
		}
		// Any event means "changed"; its details do not matter, since the file is read again.
		if _, err := w.Read(buf); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("cgroup: waiting on %s: %w", path, ctx.Err())
			}
			return fmt.Errorf("cgroup: waiting on %s: %w", path, err)
		}
	}
}

// notWritable reports whether err means that this process may not write there.
func notWritable(err error) bool {
	return errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EROFS)
}
