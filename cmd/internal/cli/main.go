// Package cli holds the cobra commands of perfrun, pls and wholock, and the
// Main every perflock program calls (perflockd's command is in package
// daemoncli: the clients do not link the daemon, so that they start as fast
// as a small Go program).
package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/perflock/perflock/runner"
)

// Main runs a perflock program and returns its exit status. Run under the
// name runner.HeldArg0 it is a held child (which never returns), the
// trampoline perfrun and pls start a job through where they keep a parent;
// otherwise it runs newCmd() with os.Args[1:]. Usage errors exit 64 with a
// hint to --help.
func Main(newCmd func() *cobra.Command) int {
	if filepath.Base(os.Args[0]) == runner.HeldArg0 {
		runner.HeldChildMain()
	}
	return execute(newCmd(), os.Args[1:])
}

// Usage is err as a usage error: exit 64 with a hint to --help.
func Usage(err error) error { return usageError{err} }

// Exit ends the program with code, printing err first when not nil.
func Exit(code int, err error) error { return exitError{code: code, err: err} }

// usageError is a bad flag or argument: exit 64 with a hint to --help.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// exitError ends the program with code, printing err first when not nil.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e exitError) Unwrap() error { return e.err }

// exitCode turns a status into the error RunE returns: nil for 0.
func exitCode(code int) error {
	if code == 0 {
		return nil
	}
	return exitError{code: code}
}

func execute(cmd *cobra.Command, args []string) int {
	cmd.SetArgs(args)
	// Non-empty, so that cobra adds --version; the build info is read only
	// when it is asked for, not at every start.
	cmd.Version = "(see --version)"
	cmd.SetVersionTemplate("{{.Name}} {{perflockVersion}}\n")
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	err := cmd.ExecuteContext(context.Background())
	if err == nil {
		return 0
	}
	name := cmd.Name()
	var ee exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s\n", name, message(ee.err))
		}
		return ee.code
	}
	// usageError, or cobra's own complaints about arguments.
	fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s\nRun '%s --help' for usage.\n", name, message(err), name)
	return runner.ExitUsage
}

// NoEmptyValue is a usage error for the first of the named flags that was
// given an empty value (--socket "", often a variable that was not set):
// it would otherwise quietly mean the flag's default, not what was asked.
func NoEmptyValue(cmd *cobra.Command, names ...string) error {
	for _, n := range names {
		f := cmd.Flags().Lookup(n)
		if f == nil || !f.Changed || f.Value.String() != "" {
			continue
		}
		what, _ := pflag.UnquoteUsage(f)
		if what == "string" {
			what = "value"
		}
		return usageError{fmt.Errorf("--%s \"\": give a %s, or leave out --%s", n, what, n)}
	}
	return nil
}

// message is err for users, without the library's package prefixes.
func message(err error) string {
	return strings.ReplaceAll(err.Error(), "runner: ", "")
}

// helpTemplate puts the manual sections (annotation "manual") after the
// flags.
const helpTemplate = `{{with .Long}}{{.}}

{{end}}{{.UsageString}}{{with index .Annotations "manual"}}
{{.}}
{{end}}`
