// Package deb_test checks the Debian package that contrib/deb/build makes:
// installed with dpkg in a guest with systemd as PID 1 (make
// test-systemd), its socket enabled, a job run, and the package purged. It
// runs after test/e2e (the tier runs test binaries in name order) and first
// removes the units test/e2e installed in /etc.
package deb_test

import (
	"compress/gzip"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perflock/perflock/contrib/systemd"
)

// The systemd tier (test/vm/run) puts the package it built in the folder
// PERFLOCK_TIER_DEBS names.
const debsEnv = "PERFLOCK_TIER_DEBS"

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func systemctl(args ...string) string {
	out, _ := exec.Command("systemctl", args...).CombinedOutput()
	return strings.TrimSpace(string(out))
}

// dpkg -i, systemctl enable --now perflockd.socket, perfrun runs a job
// through the socket-activated daemon; then dpkg --purge stops and
// disables it all.
func TestDebInstallsAndServes(t *testing.T) {
	if os.Getenv("PERFLOCK_TEST_SYSTEMD") != "1" {
		t.Skip("systemd-tier test: set PERFLOCK_TEST_SYSTEMD=1 (make test-systemd runs it in QEMU guests)")
	}
	dir := os.Getenv(debsEnv)
	if dir == "" {
		t.Skip(debsEnv + " is not set: no package to install")
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "perflock_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("%s: want one perflock_*.deb, have %q", dir, debs)
	}
	removeOverrides(t)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := exec.Command("journalctl", "-u", "perflockd.service", "-u", "perflockd.socket", "--no-pager", "-n", "60").CombinedOutput()
			t.Logf("journal:\n%s", out)
		}
		// Leave the guest as it was for the other tests.
		exec.Command("dpkg", "--purge", "perflock").Run()
	})

	// The guest's dpkg leaves out /usr/share/man (path-exclude): put it back.
	// unsafe-io: no fsync per file, seconds saved under emulation.
	start := time.Now()
	out := run(t, "dpkg", "--force-unsafe-io", "--path-include=/usr/share/man/*", "-i", debs[0])
	t.Logf("dpkg -i %s (%v):\n%s", filepath.Base(debs[0]), time.Since(start).Round(time.Millisecond), out)
	t.Logf("installed: %s", run(t, "dpkg-query", "-W", "perflock"))
	for _, f := range []string{
		"/usr/bin/perfrun", "/usr/bin/pls", "/usr/bin/wholock", "/usr/bin/perflockd",
		"/lib/systemd/system/perflockd.service", "/lib/systemd/system/perflockd.socket", "/lib/systemd/system/perflock.slice",
		"/usr/share/bash-completion/completions/perfrun", "/usr/share/zsh/vendor-completions/_perfrun",
		"/usr/share/fish/vendor_completions.d/perfrun.fish",
		"/usr/share/man/man1/perfrun.1.gz", "/usr/share/man/man8/perflockd.8.gz",
	} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("not installed: %v", err)
		}
	}
	if _, err := exec.LookPath("man"); err == nil {
		if got := run(t, "man", "-w", "perfrun"); !strings.HasSuffix(got, "perfrun.1.gz") {
			t.Errorf("man -w perfrun: %s", got)
		}
	} else if page := gunzip(t, "/usr/share/man/man1/perfrun.1.gz"); !strings.Contains(page, `.TH "PERFRUN" "1"`) || !strings.Contains(page, ".SH NAME\nperfrun - ") {
		t.Errorf("perfrun.1.gz is not a manual page:\n%.300s", page)
	}
	if got := systemctl("show", "perflockd.service", "-p", "ExecStart", "--value"); !strings.Contains(got, "path=/usr/bin/perflockd ") {
		t.Errorf("perflockd.service ExecStart: %s", got)
	}

	start = time.Now()
	run(t, "systemctl", "enable", "--now", "perflockd.socket")
	if st := systemctl("is-active", "perflockd.socket"); st != "active" {
		t.Fatalf("perflockd.socket %s: %s", st, systemctl("status", "--no-pager", "perflockd.socket"))
	}
	cmd := exec.Command("/usr/bin/perfrun", "--", "true")
	cmd.Env = append(os.Environ(), "PERFLOCK_SOCKET=") // the system daemon, by discovery
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("/usr/bin/perfrun -- true: %v\n%s", err, out)
	}
	if st := systemctl("is-active", "perflockd.service"); st != "active" {
		t.Fatalf("perflockd.service %s after perfrun: %s", st, systemctl("status", "--no-pager", "perflockd.service"))
	}
	if out := run(t, "/usr/bin/wholock"); out != "no jobs" {
		t.Errorf("wholock: %q, want no jobs", out)
	}
	t.Logf("enabled, served a job (%v)", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	run(t, "dpkg", "--purge", "perflock")
	t.Logf("purged (%v)", time.Since(start).Round(time.Millisecond))
	for _, u := range []string{"perflockd.socket", "perflockd.service"} {
		if st := systemctl("is-active", u); st == "active" {
			t.Errorf("%s still active after dpkg --purge", u)
		}
	}
	for _, f := range []string{"/usr/bin/perfrun", "/lib/systemd/system/perflockd.socket", "/etc/systemd/system/sockets.target.wants/perflockd.socket", "/run/perflock"} {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("%s left after dpkg --purge", f)
		}
	}
}

// removeOverrides takes away units `perflockd install` put in /etc (another
// test's), which would hide the package's in /lib.
func removeOverrides(t *testing.T) {
	t.Helper()
	names, err := fs.Glob(systemd.Units, "*")
	if err != nil {
		t.Fatal(err)
	}
	var etc []string
	for _, n := range names {
		if _, err := os.Lstat(filepath.Join("/etc/systemd/system", n)); err == nil {
			etc = append(etc, filepath.Join("/etc/systemd/system", n))
		}
	}
	if len(etc) == 0 {
		return
	}
	t.Logf("removing %v", etc)
	exec.Command("systemctl", "disable", "--now", "perflockd.socket", "perflockd.service").Run()
	for _, f := range etc {
		os.Remove(f)
	}
	run(t, "systemctl", "daemon-reload")
}

func gunzip(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
