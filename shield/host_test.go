package shield

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/perflock/perflock/cgroup"
)

// This machine's cgroup2 hierarchy, only looked at: where it offers no
// cpuset controller (a hybrid host, whose cpuset is bound to cgroup v1),
// the cgroupfs backend says so; where it does, and this is root, it can
// work.
func TestCgroupfsOnThisMachine(t *testing.T) {
	mount, err := cgroup.Mountpoint()
	if err != nil {
		t.Skipf("no cgroup2 here: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(mount, "cgroup.controllers"))
	if err != nil {
		t.Fatal(err)
	}
	err = NewCgroupfs("", "").Check(ctx)
	if !slices.Contains(strings.Fields(string(b)), "cpuset") {
		want := "shield: cgroupfs: the cgroup2 hierarchy at " + mount + " offers no cpuset controller (a hybrid cgroup setup"
		if !errors.Is(err, ErrUnsupported) || !strings.HasPrefix(err.Error(), want) {
			t.Fatalf("Check: %v\nwant ErrUnsupported starting %q", err, want)
		}
		if _, err := NewCgroupfs("", "").Save(ctx); !errors.Is(err, ErrUnsupported) {
			t.Errorf("Save: %v, want ErrUnsupported", err)
		}
		t.Logf("%s offers %q: %v", mount, strings.TrimSpace(string(b)), err)
		return
	}
	if os.Geteuid() == 0 && err != nil {
		t.Errorf("Check as root where %s offers cpuset: %v", mount, err)
	}
	t.Logf("%s offers %q: Check %v", mount, strings.TrimSpace(string(b)), err)
}

// This machine's IRQs and workqueue mask, only read: Check and Save.
func TestIRQAndWorkqueueOnThisMachine(t *testing.T) {
	for _, b := range []Backend{NewIRQ(""), NewWorkqueue("")} {
		err := b.Check(ctx)
		if errors.Is(err, ErrUnsupported) {
			t.Logf("%s: %v", b.Name(), err)
			continue
		}
		if err != nil {
			t.Errorf("%s: Check: %v", b.Name(), err)
			continue
		}
		saved, err := b.Save(ctx)
		if err != nil {
			t.Errorf("%s: Save: %v", b.Name(), err)
			continue
		}
		t.Logf("%s: %.300s", b.Name(), saved)
	}
}
