// Package deb_test checks the Debian package that contrib/deb/build makes:
// installed with dpkg in a guest with systemd as PID 1 (make
// test-systemd), its socket enabled, a job run, and the package purged.
// It first removes units that `perflockd install` put in /etc (test/e2e's,
// had it run first in the guest), which would hide the package's.
package deb_test

import (
	"compress/gzip"
	"debug/buildinfo"
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

	// The guest's dpkg leaves out /usr/share/man and /usr/share/doc
	// (path-exclude): put ours back. unsafe-io: no fsync per file, seconds
	// saved under emulation.
	start := time.Now()
	out := run(t, "dpkg", "--force-unsafe-io", "--path-include=/usr/share/man/*", "--path-include=/usr/share/doc/perflock/*", "-i", debs[0])
	t.Logf("dpkg -i %s (%v):\n%s", filepath.Base(debs[0]), time.Since(start).Round(time.Millisecond), out)
	t.Logf("installed: %s", run(t, "dpkg-query", "-W", "perflock"))
	for _, f := range []string{
		"/usr/bin/perfrun", "/usr/bin/pls", "/usr/bin/wholock", "/usr/bin/perflockd",
		"/lib/systemd/system/perflockd.service", "/lib/systemd/system/perflockd.socket", "/lib/systemd/system/perflock.slice",
		"/usr/share/bash-completion/completions/perfrun", "/usr/share/zsh/vendor-completions/_perfrun",
		"/usr/share/fish/vendor_completions.d/perfrun.fish",
		"/usr/share/man/man1/perfrun.1.gz", "/usr/share/man/man8/perflockd.8.gz",
		"/usr/lib/perflock/slurm/prolog", "/usr/lib/perflock/slurm/epilog", "/usr/lib/perflock/slurm/drain",
		"/usr/share/doc/perflock/slurm/slurm.conf.example",
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
	checkCopyright(t)
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
	// perflockd ends the lease once the job's scope is empty, which it
	// learns after perfrun has exited.
	eventually(t, time.Minute, "wholock to list no jobs", func() (string, bool) {
		out := run(t, "/usr/bin/wholock")
		return out, out == "no jobs"
	})
	t.Logf("enabled, served a job (%v)", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	run(t, "dpkg", "--purge", "perflock")
	t.Logf("purged (%v)", time.Since(start).Round(time.Millisecond))
	for _, u := range []string{"perflockd.socket", "perflockd.service"} {
		if st := systemctl("is-active", u); st == "active" {
			t.Errorf("%s still active after dpkg --purge", u)
		}
	}
	for _, f := range []string{"/usr/bin/perfrun", "/lib/systemd/system/perflockd.socket", "/etc/systemd/system/sockets.target.wants/perflockd.socket", "/run/perflock", "/usr/share/doc/perflock"} {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("%s left after dpkg --purge", f)
		}
	}
}

// Where Debian wants a package's copyright, in its machine-readable format.
const (
	copyrightFile = "/usr/share/doc/perflock/copyright"
	dep5Format    = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
	holder        = "The perflock Authors"
)

// checkCopyright: the installed package names its maintainer and, in a
// DEP-5 copyright file, perflock's license (Apache-2.0, whose text Debian
// ships), and the copyright and license of every Go module linked into the
// commands (read from the binaries' build information).
func checkCopyright(t *testing.T) {
	t.Helper()
	if m := run(t, "dpkg-query", "-W", "-f", "${Maintainer}", "perflock"); !strings.HasPrefix(m, holder+" <") || !strings.HasSuffix(m, ">") {
		t.Errorf("Maintainer %q, want %s <address>", m, holder)
	}
	b, err := os.ReadFile(copyrightFile)
	if err != nil {
		t.Fatalf("no copyright file: %v", err)
	}
	paras := strings.Split(strings.TrimSpace(string(b)), "\n\n")
	if !strings.HasPrefix(paras[0], dep5Format+"\n") || !strings.Contains(paras[0], "\nUpstream-Name: perflock\n") {
		t.Errorf("%s: header %q, want the DEP-5 format and perflock", copyrightFile, paras[0])
	}
	own := map[string]string{}
	for _, line := range strings.Split(paras[1], "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			own[k] = v
		}
	}
	if own["Files"] != "*" || own["License"] != "Apache-2.0" || !strings.HasSuffix(own["Copyright"], " "+holder) {
		t.Errorf("%s: perflock's own paragraph %q, want Files *, Copyright YEAR %s, License Apache-2.0", copyrightFile, paras[1], holder)
	}
	if last := paras[len(paras)-1]; !strings.HasPrefix(last, "License: Apache-2.0\n") || !strings.Contains(last, "/usr/share/common-licenses/Apache-2.0") {
		t.Errorf("%s: no Apache-2.0 license paragraph pointing at Debian's copy; last paragraph %q", copyrightFile, last)
	}
	if _, err := os.Stat("/usr/share/common-licenses/Apache-2.0"); err != nil {
		t.Errorf("the license text the copyright file points at: %v", err)
	}
	for _, bin := range []string{"/usr/bin/perfrun", "/usr/bin/perflockd"} {
		bi, err := buildinfo.ReadFile(bin)
		if err != nil {
			t.Fatalf("%s: %v", bin, err)
		}
		for _, d := range bi.Deps {
			if !strings.Contains(string(b), "\nFiles: "+d.Path+"/*\n") {
				t.Errorf("%s: no paragraph for %s, linked into %s", copyrightFile, d.Path, bin)
			}
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

// eventually calls f every 20 ms until it reports ok, for at most within,
// and fails the test with the value it reported last after that: for state
// perflockd changes after an event the test sees first.
func eventually(t *testing.T, within time.Duration, what string, f func() (string, bool)) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		v, ok := f()
		if ok {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s; last seen: %q", within, what, v)
			return v
		}
		time.Sleep(20 * time.Millisecond)
	}
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
