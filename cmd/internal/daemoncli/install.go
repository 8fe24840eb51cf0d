package daemoncli

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/perflock/perflock/cmd/internal/cli"
	"github.com/perflock/perflock/contrib/systemd"
	"github.com/perflock/perflock/internal/atomicfile"
	"github.com/perflock/perflock/runner"
)

// newInstall is `perflockd install`: the systemd units, for this binary.
func newInstall() *cobra.Command {
	var root, unitDir, bin string
	var noReload bool
	cmd := &cobra.Command{
		Use:   "install",
		Short: "install perflockd's systemd units (service, socket, slices)",
		Long: `install writes perflockd.service, perflockd.socket, perflock.slice,
perflock-exclusive.slice and perflock-shared.slice into the unit directory, with
ExecStart pointing at this perflockd, and reloads systemd. Then enable the socket:

  systemctl enable --now perflockd.socket

The first perfrun, pls or wholock starts the daemon through the socket.`,
		Example: `  # as root, after copying the binaries to /usr/local/bin
  perflockd install && systemctl enable --now perflockd.socket

  # into a package's staging tree, for a daemon at /usr/bin/perflockd
  perflockd install --root ./pkg --unit-dir /lib/systemd/system --bin /usr/bin/perflockd --no-reload`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cli.NoEmptyValue(cmd, "root", "unit-dir", "bin"); err != nil {
				return err
			}
			if bin == "" {
				self, err := os.Executable()
				if err != nil {
					return cli.Exit(runner.ExitUnavailable, fmt.Errorf("find own executable: %w", err))
				}
				bin = self
			}
			if !filepath.IsAbs(bin) {
				return cli.Usage(fmt.Errorf("--bin %q: want an absolute path", bin))
			}
			dir := filepath.Join(root, unitDir)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return cli.Exit(runner.ExitUnavailable, err)
			}
			err := fs.WalkDir(systemd.Units, ".", func(name string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				b, err := systemd.Units.ReadFile(name)
				if err != nil {
					return err
				}
				text := strings.ReplaceAll(string(b), systemd.ExecPlaceholder, bin)
				dst := filepath.Join(dir, name)
				if err := atomicfile.WriteFile(dst, []byte(text), 0o644); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "installed", dst)
				return nil
			})
			if err != nil {
				return cli.Exit(runner.ExitUnavailable, err)
			}
			if noReload || root != "" {
				return nil
			}
			if out, err := exec.Command("systemctl", "daemon-reload").CombinedOutput(); err != nil {
				return cli.Exit(runner.ExitUnavailable, fmt.Errorf("systemctl daemon-reload: %v: %s", err, out))
			}
			fmt.Fprintln(cmd.OutOrStdout(), "now: systemctl enable --now perflockd.socket")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&root, "root", "", "install under `DIR` (a staging tree); implies --no-reload")
	f.StringVar(&unitDir, "unit-dir", "/etc/systemd/system", "the systemd unit `DIR`ectory")
	f.StringVar(&bin, "bin", "", "the perflockd `PATH` the service runs (default: this executable)")
	f.BoolVar(&noReload, "no-reload", false, "do not run systemctl daemon-reload")
	return cmd
}
