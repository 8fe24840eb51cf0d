package cli

import (
	"os/exec"
	"strings"
	"testing"
)

// The commands start as fast as a small Go program only if they link none
// of the daemon's packages: each of those runs its package initialisers at
// every start of perfrun, pls and wholock (and of a held child).
func TestClientsLinkNoDaemon(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "../../perfrun", "../../pls", "../../wholock").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	forbidden := []string{
		"github.com/perflock/perflock/daemon", "github.com/perflock/perflock/cgroup",
		"github.com/perflock/perflock/units", "github.com/perflock/perflock/shield",
		"github.com/containerd/", "github.com/cilium/", "github.com/godbus/",
		"google.golang.org/protobuf", "github.com/coreos/go-systemd",
	}
	for _, p := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if p == f || strings.HasPrefix(p, f+"/") || (strings.HasSuffix(f, "/") && strings.HasPrefix(p, f)) {
				t.Errorf("a client links %s", p)
			}
		}
	}
}
