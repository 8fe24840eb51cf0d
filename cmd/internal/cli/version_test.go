package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// Every command answers --version with its name and this build's version,
// and exits 0 without doing anything else.
func TestVersionFlagPrintsTheBuild(t *testing.T) {
	for _, newCmd := range []func() *cobra.Command{NewPerfrun, NewPls, NewWholock} {
		cmd := newCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		if code := execute(cmd, []string{"--version"}); code != 0 {
			t.Fatalf("%s --version: exit %d: %s", cmd.Name(), code, out.String())
		}
		want := cmd.Name() + " " + Version() + "\n"
		if out.String() != want || !strings.Contains(want, "go1.") {
			t.Errorf("%s --version printed %q, want %q", cmd.Name(), out.String(), want)
		}
	}
}
