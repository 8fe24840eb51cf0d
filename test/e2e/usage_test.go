package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perflock/perflock/cgroup"
	"github.com/perflock/perflock/runner"
)

// An empty value for a flag whose absence means a default is a usage
// error (64), not the default: `wholock --cancel ""` must not list, and
// `--socket "$UNSET"` must not silently find another daemon.
func TestEmptyFlagValuesAreUsageErrors(t *testing.T) {
	e := newEnv(t, "none", "freeze")
	d := filepath.Join(e.dir, "d.sock")
	// Where perflockd --driver "" would put its jobs, were it to run.
	cgName := fmt.Sprintf("perflock-e2e-%d-empty", os.Getpid())
	t.Cleanup(func() {
		if mount, err := cgroup.Mountpoint(); err == nil {
			cgroup.RemoveTree(context.Background(), filepath.Join(mount, cgName))
		}
	})
	for _, c := range []struct {
		prog string
		args []string
		flag string
	}{
		{"wholock", []string{"--socket", e.sock, "--cancel", ""}, "--cancel"},
		{"wholock", []string{"--cancel=", "--socket", e.sock}, "--cancel"},
		{"wholock", []string{"--socket", ""}, "--socket"},
		{"perfrun", []string{"--socket", "", "--", "true"}, "--socket"},
		{"pls", []string{"--socket=", "--", "true"}, "--socket"},
		{"perfrun", []string{"--socket", e.sock, "--key", "", "--replace", "--", "true"}, "--key"},
		{"perfrun", []string{"--socket", e.sock, "-L", "", "--", "true"}, "-L"},
		{"perfrun", []string{"--socket", e.sock, "--report-file", "", "--", "true"}, "--report-file"},
		{"perflockd", []string{"--socket", ""}, "--socket"},
		{"perflockd", []string{"--socket", d, "--driver", "", "--cgroup-name", cgName}, "--driver"},
		{"perflockd", []string{"--socket", d, "--driver", "none", "--cgroup-name", ""}, "--cgroup-name"},
		{"perflockd", []string{"--socket", d, "--driver", "none", "--cpufreq-root", ""}, "--cpufreq-root"},
		{"perflockd", []string{"install", "--root", e.dir, "--unit-dir", ""}, "--unit-dir"},
		{"perflockd", []string{"install", "--root", e.dir, "--bin", ""}, "--bin"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, c.prog), c.args...)
		cmd.Dir = e.dir
		// Were an empty --socket taken as unset, the commands would find
		// the test's daemon, not the system's.
		cmd.Env = append(os.Environ(), runner.EnvSocket+"="+e.sock)
		out, err := cmd.CombinedOutput()
		cancel()
		if code := exitCode(err); code != 64 || !strings.Contains(string(out), c.flag) || !strings.Contains(string(out), "--help") {
			t.Errorf("%s %q: exit %d, want 64 and a message naming %s: %s", c.prog, c.args, code, c.flag, out)
		}
	}
	if _, err := os.Stat(filepath.Join(e.dir, "perflockd.service")); err == nil {
		t.Error("perflockd install --unit-dir \"\" wrote units into the working directory")
	}
}
