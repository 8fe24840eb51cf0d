package cli

import (
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

func init() { cobra.AddTemplateFunc("perflockVersion", Version) }

// Version is this build's version, from what the Go toolchain recorded: the
// module version when built from a released module, else "devel"; the
// commit, and "dirty" when the tree had uncommitted changes.
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	var extra []string
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision" && len(s.Value) >= 12:
			extra = append(extra, "commit "+s.Value[:12])
		case s.Key == "vcs.modified" && s.Value == "true":
			extra = append(extra, "dirty")
		}
	}
	extra = append(extra, bi.GoVersion)
	return v + " (" + strings.Join(extra, ", ") + ")"
}
