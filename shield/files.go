package shield

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// reasonError is an error whose message is its own, and that wraps a
// sentinel besides its cause: "shield: cgroupfs: the cgroup2 hierarchy at
// … offers no cpuset controller" that errors.Is finds ErrUnsupported in,
// without the sentinel's text in the message.
type reasonError struct {
	msg  string
	errs []error
}

func (e *reasonError) Error() string   { return e.msg }
func (e *reasonError) Unwrap() []error { return e.errs }

// errorf is fmt.Errorf(format, args...) that also wraps sentinel.
func errorf(sentinel error, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &reasonError{msg: err.Error(), errs: []error{sentinel, err}}
}

// readAttr reads a kernel interface file, trimmed.
func readAttr(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// writeAttr writes value to an existing kernel interface file in one
// write(2), never creating one. The error is the system's, wrapped in an
// *fs.PathError that names the file: errors.Is finds unix.EIO and the like.
func writeAttr(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// writable reports whether this process may write the file at path: its
// mode has a write bit (procfs and sysfs show 0444 for what no one may
// write, even root) and access(2) agrees.
func writable(path string) bool {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o222 == 0 {
		return false
	}
	return unix.Faccessat(unix.AT_FDCWD, path, unix.W_OK, unix.AT_EACCESS) == nil
}

// decode reads a backend's saved state strictly, for Restore and Confine:
// a state file is believed only in the shape this package writes.
func decode(backend string, saved json.RawMessage, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(saved)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrState, backend, err)
	}
	return nil
}

// isGone reports whether err says the file went away: an IRQ freed, a
// cgroup removed since Save.
func isGone(err error) bool { return errors.Is(err, os.ErrNotExist) }

// lastReport keeps what a backend's last Confine left out, for Report (a
// Reporter); safe for concurrent use.
type lastReport struct {
	mu     sync.Mutex
	report string
}

func (r *lastReport) setReport(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.report = s
}

// Report is one line about the last Confine: what it moved, and what it
// could not (IRQs that refused, processes no cgroup confines); "" when
// there is nothing to say.
func (r *lastReport) Report() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.report
}
