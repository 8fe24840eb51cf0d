// Command perflockd is perflock's daemon: it owns the fair queue and places
// jobs in their cgroups. See perflockd --help.
package main

import (
	"os"

	"github.com/perflock/perflock/cmd/internal/cli"
)

func main() { os.Exit(cli.Main(cli.NewPerflockd)) }
