// Command perfrun runs a command alone on the machine after waiting its
// turn in perflock's fair queue. See perfrun --help.
package main

import (
	"os"

	"github.com/perflock/perflock/cmd/internal/cli"
)

func main() { os.Exit(cli.Main(cli.NewPerfrun)) }
