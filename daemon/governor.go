package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/perflock/perflock/governor"
	"github.com/perflock/perflock/lockq"
	"github.com/perflock/perflock/proto"
)

// checkGovernor parses and checks an acquire's governor, on the
// connection's reader before the request is queued: a bad value is
// invalid; a machine or daemon that cannot pin is unavailable, so that the
// request fails at once instead of after waiting its turn.
func (s *server) checkGovernor(m proto.Msg) (governor.Mode, string, error) {
	mode, err := governor.ParseMode(m.Governor)
	if err != nil {
		return mode, proto.CodeInvalid, fmt.Errorf("--governor %q: want performance, none, or a percentage from 1 to 100 such as 70%%", m.Governor)
	}
	if mode == governor.None {
		return mode, "", nil
	}
	flag := "--governor " + mode.String()
	if lm, err := lockq.ParseMode(m.Mode); err == nil && lm.Kind == lockq.Shared {
		return mode, proto.CodeInvalid, fmt.Errorf("%s: shared jobs never pin the CPU frequency (perfrun's exclusive and group jobs do)", flag)
	}
	if len(m.Resources) > 0 && !slices.Contains(m.Resources, lockq.Machine) {
		return mode, proto.CodeInvalid, fmt.Errorf("%s pins the whole machine: the request must hold the machine (resource %s)", flag, lockq.Machine)
	}
	err = s.pinner.Check(mode)
	switch {
	case err == nil:
		return mode, "", nil
	case errors.Is(err, governor.ErrNoCpufreq):
		return mode, proto.CodeUnavailable, fmt.Errorf("%s: cpufreq is not available on this machine (no cpufreq driver, common in virtual machines): run without --governor", flag)
	case errors.Is(err, governor.ErrUnsupported):
		return mode, proto.CodeUnavailable, fmt.Errorf("%s: %s: run with another --governor, or without", flag, strings.TrimPrefix(err.Error(), "governor: "))
	case os.Geteuid() != 0 && (errors.Is(err, fs.ErrPermission) || errors.Is(err, unix.EROFS)):
		return mode, proto.CodeUnavailable, fmt.Errorf("%s: this perflockd runs as uid %d, not root, and cannot change the CPU frequency: the system perflockd (run as root, e.g. perflockd install) is needed; run without --governor", flag, os.Geteuid())
	}
	return mode, proto.CodeUnavailable, fmt.Errorf("%s: perflockd cannot pin the CPU frequency: %s", flag, strings.TrimPrefix(err.Error(), "governor: "))
}
