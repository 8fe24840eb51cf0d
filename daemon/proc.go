package daemon

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ErrNotChild: a pid to place is neither the asking client nor its own
// child.
var ErrNotChild = errors.New("daemon: pid is not the client's own child")

// procRoot is where /proc is.
const procRoot = "/proc"

// checkChild verifies that pid is parent itself (a client that execs its
// job in place: still the process that connected, started at
// parentStart) or a child of parent, and runs as uid. The client cannot
// fake any of it: the parent pid and uid come from SO_PEERCRED, its start
// time was read when its request came, and a client's unreaped child
// cannot be replaced by another process.
func checkChild(pid, parent int, parentStart uint64, uid uint32) error {
	if pid == parent {
		if got, err := procStart(pid); err != nil || got != parentStart || parentStart == 0 {
			return fmt.Errorf("%w: pid %d is not the client that connected (it exited, or its pid is another process's now)", ErrNotChild, pid)
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("%s/%d/status", procRoot, pid))
	if err != nil {
		return fmt.Errorf("%w: pid %d: %v", ErrNotChild, pid, err)
	}
	st, err := parseStatus(b)
	if err != nil {
		return fmt.Errorf("%w: pid %d: %v", ErrNotChild, pid, err)
	}
	if st.ppid != parent && pid != parent {
		return fmt.Errorf("%w: pid %d has parent %d, the client is %d", ErrNotChild, pid, st.ppid, parent)
	}
	if st.uid != uid {
		return fmt.Errorf("%w: pid %d runs as uid %d, the client as %d", ErrNotChild, pid, st.uid, uid)
	}
	return nil
}

type procStatus struct {
	ppid int
	uid  uint32 // real uid
}

// parseStatus reads PPid and the real Uid from /proc/PID/status.
func parseStatus(b []byte) (procStatus, error) {
	var st procStatus
	var havePPid, haveUid bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		switch k {
		case "PPid":
			n, err := strconv.Atoi(f[0])
			if err != nil {
				return st, fmt.Errorf("bad PPid %q", v)
			}
			st.ppid, havePPid = n, true
		case "Uid":
			n, err := strconv.ParseUint(f[0], 10, 32)
			if err != nil {
				return st, fmt.Errorf("bad Uid %q", v)
			}
			st.uid, haveUid = uint32(n), true
		}
	}
	if !havePPid || !haveUid {
		return st, errors.New("no PPid or Uid line")
	}
	return st, nil
}

// procCgroup is a process's cgroup2 path, the "0::PATH" line of
// /proc/PID/cgroup.
func procCgroup(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("%s/%d/cgroup", procRoot, pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("pid %d: no cgroup2 line in /proc/%d/cgroup", pid, pid)
}
