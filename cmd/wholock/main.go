// Command wholock lists who holds the machine and who waits for it. See
// wholock --help.
package main

import (
	"os"

	"github.com/perflock/perflock/cmd/internal/cli"
)

func main() { os.Exit(cli.Main(cli.NewWholock)) }
