// Command pls runs background work that shares the machine and steps aside
// (frozen or drained) while exclusive jobs run. See pls --help.
package main

import (
	"os"

	"github.com/perflock/perflock/cmd/internal/cli"
)

func main() { os.Exit(cli.Main(cli.NewPls)) }
