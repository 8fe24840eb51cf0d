// Command perflockd is perflock's daemon: it owns the fair queue and places
// jobs in their cgroups. See perflockd --help.
package main

import (
	"log/slog"
	"os"

	"github.com/perflock/perflock/cmd/internal/cli"
	"github.com/perflock/perflock/cmd/internal/daemoncli"
	"github.com/perflock/perflock/daemon"
	"github.com/perflock/perflock/daemon/metrics"
)

func main() {
	daemoncli.NewMetrics = func(log *slog.Logger) daemon.Metrics { return metrics.New(log) }
	os.Exit(cli.Main(daemoncli.NewPerflockd))
}
