package runner

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/perflock/perflock/daemon"
)

// TestMain lets the test binary play the held child and an autostarted
// daemon when it is re-executed under their names, as the commands do.
func TestMain(m *testing.M) {
	switch filepath.Base(os.Args[0]) {
	case HeldArg0:
		HeldChildMain()
	case DaemonArg0:
		os.Exit(testDaemonMain(os.Args[1:]))
	}
	daemonProgram = os.Executable
	os.Exit(m.Run())
}

// testDaemonMain is a minimal perflockd: --socket and --idle-exit, driver
// none.
func testDaemonMain(args []string) int {
	fs := flag.NewFlagSet(DaemonArg0, flag.ContinueOnError)
	socket := fs.String("socket", "", "")
	idle := fs.Duration("idle-exit", time.Minute, "")
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := daemon.Run(ctx, daemon.Config{Socket: *socket, IdleExit: *idle, Driver: "none"}); err != nil {
		return ExitUnavailable
	}
	return 0
}
