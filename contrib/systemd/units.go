// Package systemd holds perflock's systemd units: the perflockd service and
// socket, and the slices its jobs run in. `perflockd install` writes them.
package systemd

import "embed"

// Units are perflockd.service, perflockd.socket, perflock.slice,
// perflock-exclusive.slice and perflock-shared.slice.
//
//go:embed perflockd.service perflockd.socket perflock.slice perflock-exclusive.slice perflock-shared.slice
var Units embed.FS

// ExecPlaceholder is the perflockd path in perflockd.service, replaced by
// the installed binary's path.
const ExecPlaceholder = "/usr/local/bin/perflockd"
