package e2e

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/perflock/perflock/proto"
)

// A job whose command line is long and not ASCII runs in a scope whose
// Description is valid UTF-8 (D-Bus refuses anything else) and reads as
// the command: the command is cut at a character, never inside one.
func TestSystemdLongNonASCIICommandHasAReadableDescription(t *testing.T) {
	e := newSystemEnv(t)
	word := strings.Repeat("é", 150)
	p := e.start("perfrun", []string{"--socket", e.sock, "--", "sh", "-c", "sleep 600", word})
	var job proto.Entry
	e.waitFor("the job to run", func() bool {
		es := e.list()
		if len(es) == 1 && es[0].State == "running" {
			job = es[0]
			return true
		}
		return false
	})
	d := show(t, job.Where, "Description")
	if !utf8.ValidString(d) || !strings.Contains(d, "sh -c sleep 600 "+strings.Repeat("é", 100)) {
		t.Errorf("%s Description %q: want valid UTF-8 with the command", job.Where, d)
	}
	status := systemctl(t, "status", "--no-pager", job.Where)
	t.Logf("systemctl status %s:\n%s", job.Where, status)
	if !strings.Contains(status, strings.Repeat("é", 40)) {
		t.Errorf("systemctl status does not show the command")
	}
	c := e.start("wholock", []string{"--socket", e.sock, "--cancel", job.Job})
	if code := e.exit(c); code != 0 {
		t.Fatalf("wholock --cancel %s: exit %d: %s", job.Job, code, c.stderr)
	}
	if code := e.exit(p); code != 128+15 {
		t.Fatalf("perfrun after the cancel: exit %d, want 143: %s", code, p.stderr)
	}
	e.waitQueue("")
}
