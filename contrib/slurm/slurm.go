// Package slurm holds perflock's Slurm integration: a Prolog and an Epilog
// that give a Slurm job the node's exclusive lease (bound to the job's
// cgroup), the perflockd --busy-command that drains the node in Slurm while
// a local exclusive job waits or runs, the slurm.conf lines they need, and
// a perflockd.service drop-in. The Debian package installs the scripts in
// /usr/lib/perflock/slurm; see perflock's README, "Slurm".
package slurm

import "embed"

// Files are prolog, epilog, drain, slurm.conf.example and perflockd.conf.
//
//go:embed prolog epilog drain slurm.conf.example perflockd.conf
var Files embed.FS

// Scripts are the executable files among Files.
var Scripts = []string{"prolog", "epilog", "drain"}
