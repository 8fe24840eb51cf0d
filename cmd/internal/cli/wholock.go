package cli

import (
	"encoding/json"
	"errors"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/perflock/perflock/runner"
)

// NewWholock is wholock: list who holds the machine and who waits.
func NewWholock() *cobra.Command {
	var asJSON, watch bool
	var socket, cancel string
	cmd := &cobra.Command{
		Use:   "wholock [--watch] [--json] [--cancel JOB] [--socket PATH]",
		Short: "list the jobs that hold or wait for the machine",
		Long: `wholock lists perflock's queue: one row per job, first those that hold the
machine (in the order they were granted), then those that wait (in line order).

Columns: STATE (running, frozen, freezing, granted: held but not started yet,
waiting), MODE (exclusive, shared, group(ID); with perfrun --governor's CPU
frequency in parentheses, e.g. exclusive (performance)), USER, PID (of the
perfrun or pls process), TIME (held or waited so far), WHERE (the job's cgroup or
unit, "-" when none) and COMMAND (cut to fit the terminal). An empty queue prints
"no jobs".

--watch keeps showing the queue, updated as soon as it changes (perflockd sends
each change; wholock does not poll it). On a terminal it redraws the screen: a
header line (the daemon's driver and policy; how many jobs run, are frozen and
wait; the time), then the table, fitted to the window; the times advance every
second. Ctrl-C ends it. Otherwise, or with --json, it prints one JSON array per
change, each on one line. If perflockd goes away, wholock says so and tries to
reconnect every second (it does not start a daemon then).

--cancel JOB cancels a job by its name (x-42, as --json's "job" shows) or ticket: a
waiting request leaves the queue (its perfrun or pls exits 75, saying who cancelled
it); a running job is stopped with SIGTERM, then SIGKILL 10 s later. Only the
job's owner or root may.`,
		Example: `  wholock
  wholock --json | jq '.[] | select(.state == "waiting") | .user'
  wholock --watch
  wholock --watch --json | jq -c 'map(select(.state == "waiting")) | length'
  wholock --cancel x-42`,
		Annotations: map[string]string{"manual": `EXIT STATUS
  0   listed (or cancelled); --watch: ended by Ctrl-C, SIGTERM or SIGHUP
  1   --cancel: no such job
  64  bad usage, an empty value included (--cancel "", --socket "")
  69  no perflockd reachable or startable, or it is overloaded (its queue of new
      connections stayed full for 30 s, or it refused the connection at its
      connection limit); --watch: perflockd refused the watch,
      or speaks another protocol version after a restart
  77  --cancel: the job is someone else's

ENVIRONMENT
  PERFLOCK_SOCKET  the daemon's socket, like --socket; otherwise the same discovery
                   as perfrun (a per-user daemon is started if none runs, and then
                   lists nothing; never one on a socket named with --socket or
                   PERFLOCK_SOCKET).`},
		Args:                  cobra.NoArgs,
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := NoEmptyValue(cmd, "socket", "cancel"); err != nil {
				return err
			}
			if watch && cancel != "" {
				return usageError{errors.New("--watch and --cancel do not go together")}
			}
			if watch {
				ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
				defer stop()
				var err error
				if f, ok := cmd.OutOrStdout().(*os.File); ok && !asJSON && runner.IsTerminal(f) {
					err = runner.WatchTerminal(ctx, socket, f, cmd.ErrOrStderr())
				} else {
					err = runner.WatchJSON(ctx, socket, cmd.OutOrStdout(), cmd.ErrOrStderr())
				}
				if err != nil {
					return exitError{runner.ExitUnavailable, err}
				}
				return nil
			}
			if cancel != "" {
				err := runner.Cancel(cmd.Context(), socket, cancel, cmd.ErrOrStderr())
				switch {
				case errors.Is(err, runner.ErrDenied):
					return exitError{runner.ExitDenied, err}
				case errors.Is(err, runner.ErrNoJob):
					return exitError{runner.ExitNoJob, err}
				case err != nil:
					return exitError{runner.ExitUnavailable, err}
				}
				return nil
			}
			entries, err := runner.List(cmd.Context(), socket, cmd.ErrOrStderr())
			if err != nil {
				return exitError{runner.ExitUnavailable, err}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				b, err := json.MarshalIndent(entries, "", "  ")
				if err != nil {
					return exitError{runner.ExitUnavailable, err}
				}
				_, err = out.Write(append(b, '\n'))
				return err
			}
			width := 0
			if f, ok := out.(*os.File); ok {
				width = runner.TerminalWidth(f)
			}
			return runner.WriteTable(out, entries, width)
		},
	}
	cmd.SetHelpTemplate(helpTemplate)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the entries as a JSON array (field names as in the protocol)")
	cmd.Flags().BoolVar(&watch, "watch", false, "keep showing the queue as it changes (with --json: one JSON array a line)")
	cmd.Flags().StringVar(&socket, "socket", "", "talk to the perflockd at `PATH`")
	cmd.Flags().StringVar(&cancel, "cancel", "", "cancel `JOB` (a name like x-42, or a ticket): its owner or root only")
	return cmd
}
