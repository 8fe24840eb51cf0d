// Command debcopyright writes the Debian package's copyright file
// (/usr/share/doc/perflock/copyright) in the machine-readable format
// (DEP-5): perflock's own license, read from LICENSE, and the license of
// every Go module, and of the Go standard library, that is linked into the
// commands (they are static binaries, so those licenses travel with them).
// contrib/deb/build runs it.
//
//	go run ./cmd/internal/debcopyright [-license LICENSE] [PACKAGE...]
//	go run ./cmd/internal/debcopyright -maintainer [-license LICENSE]
//
// With -maintainer it prints the package's Maintainer field instead: the
// copyright holder LICENSE names, at the project's address. The packages default to the four commands. A module whose license it
// cannot name fails the build: look at it and teach classify.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Commands are the packages built into the Debian package.
var Commands = []string{
	"github.com/perflock/perflock/cmd/perfrun", "github.com/perflock/perflock/cmd/pls",
	"github.com/perflock/perflock/cmd/wholock", "github.com/perflock/perflock/cmd/perflockd",
}

func main() {
	license := flag.String("license", "LICENSE", "perflock's license file")
	maintainer := flag.Bool("maintainer", false, "print the Maintainer field")
	flag.Parse()
	pkgs := flag.Args()
	if len(pkgs) == 0 {
		pkgs = Commands
	}
	var err error
	if *maintainer {
		var own Project
		if own, err = ReadProject(*license); err == nil {
			fmt.Println(own.Maintainer())
		}
	} else {
		err = run(os.Stdout, *license, pkgs)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "debcopyright:", err)
		os.Exit(1)
	}
}

func run(w io.Writer, licenseFile string, pkgs []string) error {
	own, err := ReadProject(licenseFile)
	if err != nil {
		return err
	}
	mods, err := Linked(pkgs)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if err := Render(&b, own, mods); err != nil {
		return err
	}
	_, err = w.Write(b.Bytes())
	return err
}

// Project is perflock's own copyright and license.
type Project struct {
	Copyright string // "2026 The perflock Authors"
	License   string // a DEP-5 short name: "Apache-2.0"
}

// The contact for the package and its upstream: the authors, at the
// project's no-reply address.
const contactAddress = "perflock@users.noreply.github.com"

// Holder is the copyright holder of Copyright, without the years.
func (p Project) Holder() string {
	return strings.TrimLeft(p.Copyright, "0123456789-, ")
}

// Maintainer is the package's Maintainer field.
func (p Project) Maintainer() string {
	return p.Holder() + " <" + contactAddress + ">"
}

var projectCopyright = regexp.MustCompile(`(?m)^\s*Copyright\s+((?:\d{4}[-, ]*)+\S.*?)\s*$`)

// ReadProject reads perflock's LICENSE: the Apache License 2.0 with its
// copyright line filled in ("Copyright 2026 The perflock Authors").
func ReadProject(file string) (Project, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return Project{}, err
	}
	id, err := classify(string(b))
	if err != nil || id != "Apache-2.0" {
		return Project{}, fmt.Errorf("%s: want the Apache License 2.0 (got %q, %v)", file, id, err)
	}
	m := projectCopyright.FindStringSubmatch(string(b))
	if m == nil {
		return Project{}, fmt.Errorf("%s: no line like \"Copyright 2026 The perflock Authors\"", file)
	}
	return Project{Copyright: m[1], License: id}, nil
}

// Module is one Go module linked into the commands.
type Module struct {
	Path, Version, Dir string
}

// Linked lists the modules (not perflock's own) the packages are built
// from, and the standard library as the module "std", sorted by path.
func Linked(pkgs []string) ([]Module, error) {
	gocmd := os.Getenv("GO")
	if gocmd == "" {
		gocmd = "go"
	}
	args := append([]string{"list", "-deps", "-f", `{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}} {{.Dir}}{{end}}{{end}}`}, pkgs...)
	cmd := exec.Command(gocmd, args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list -deps: %w", err)
	}
	seen := map[string]bool{}
	var mods []Module
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), " ", 3)
		if len(f) != 3 || seen[f[0]] {
			continue
		}
		if f[2] == "" {
			return nil, fmt.Errorf("module %s %s is not downloaded (go mod download)", f[0], f[1])
		}
		seen[f[0]] = true
		mods = append(mods, Module{Path: f[0], Version: f[1], Dir: f[2]})
	}
	goroot, err := exec.Command(gocmd, "env", "GOROOT", "GOVERSION").Output()
	if err != nil {
		return nil, fmt.Errorf("go env: %w", err)
	}
	env := strings.Fields(string(goroot))
	if len(env) != 2 {
		return nil, fmt.Errorf("go env GOROOT GOVERSION: %q", goroot)
	}
	mods = append(mods, Module{Path: "std", Version: env[1], Dir: env[0]})
	sort.Slice(mods, func(i, j int) bool { return mods[i].Path < mods[j].Path })
	return mods, nil
}

// classify names a license text by its DEP-5 short name.
func classify(text string) (string, error) {
	t := strings.Join(strings.Fields(text), " ")
	has := func(s string) bool { return strings.Contains(t, s) }
	var ids []string
	if has("Apache License") && has("Version 2.0") {
		ids = append(ids, "Apache-2.0")
	}
	if has("Permission is hereby granted, free of charge") {
		ids = append(ids, "Expat")
	}
	if has("Redistribution and use in source and binary forms") {
		if has("Neither the name") || has("names of its contributors may be used") {
			ids = append(ids, "BSD-3-clause")
		} else {
			ids = append(ids, "BSD-2-clause")
		}
	}
	if has("Mozilla Public License") && has("2.0") {
		ids = append(ids, "MPL-2.0")
	}
	if len(ids) != 1 {
		return "", fmt.Errorf("cannot name the license (candidates %q)", ids)
	}
	return ids[0], nil
}

// licenseFiles are the names a module's license may have, most usual first.
var licenseFiles = []string{"LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "COPYING"}

// copyrightLine is a copyright statement, not the Apache appendix's
// template or a sentence about copyright notices.
var copyrightLine = regexp.MustCompile(`^\s*Copyright\s+(?:\([cC]\)\s*|©\s*)?(\d{4}.*|The .*|[A-Z][A-Za-z]+ .*)$`)

// copyrights lists the copyright statements in the texts, once each.
func copyrights(texts ...string) []string {
	var out []string
	seen := map[string]bool{}
	for _, text := range texts {
		for _, line := range strings.Split(text, "\n") {
			m := copyrightLine.FindStringSubmatch(line)
			if m == nil || strings.Contains(m[1], "[yyyy]") {
				continue
			}
			c := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(m[1]), "All rights reserved."))
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
		}
	}
	return out
}

// field formats a multi-line field value: each line after the first
// indented by a space, an empty one written " .".
func field(lines []string) string {
	var b strings.Builder
	for i, l := range lines {
		l = strings.TrimRight(l, " \t\r")
		if i == 0 {
			b.WriteString(l)
			continue
		}
		b.WriteString("\n ")
		if strings.TrimSpace(l) == "" || strings.TrimSpace(l) == "." {
			b.WriteString(".")
		} else {
			b.WriteString(l)
		}
	}
	return b.String()
}

// text is a license or notice file's lines, without leading and trailing
// empty ones.
func text(s string) []string {
	lines := strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n")
	for len(lines) > 0 && strings.TrimSpace(lines[0]) == "" {
		lines = lines[1:]
	}
	for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// apacheRef is the standalone Apache-2.0 paragraph's text: Debian ships
// the license itself.
var apacheRef = []string{
	"Apache-2.0",
	`Licensed under the Apache License, Version 2.0 (the "License");`,
	"you may not use this file except in compliance with the License.",
	"You may obtain a copy of the License at",
	"",
	"    https://www.apache.org/licenses/LICENSE-2.0",
	"",
	"Unless required by applicable law or agreed to in writing, software",
	`distributed under the License is distributed on an "AS IS" BASIS,`,
	"WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.",
	"See the License for the specific language governing permissions and",
	"limitations under the License.",
	"",
	"On Debian systems, the complete text of the Apache License, Version 2.0,",
	`can be found in "/usr/share/common-licenses/Apache-2.0".`,
}

// Render writes the copyright file.
func Render(w io.Writer, own Project, mods []Module) error {
	if own.License != "Apache-2.0" {
		return fmt.Errorf("perflock's license %q: only Apache-2.0 is rendered", own.License)
	}
	var b strings.Builder
	para := func(fields ...[2]string) {
		b.WriteString("\n")
		for _, f := range fields {
			fmt.Fprintf(&b, "%s: %s\n", f[0], f[1])
		}
	}
	b.WriteString("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n")
	fmt.Fprintf(&b, "Upstream-Name: perflock\nUpstream-Contact: %s\nSource: https://github.com/perflock/perflock\n", own.Maintainer())
	b.WriteString(field([]string{"Comment: The commands in /usr/bin are static Go binaries: besides",
		"perflock's own code they hold the Go standard library and the Go",
		"modules named below, each under its own license."}) + "\n")
	para([2]string{"Files", "*"}, [2]string{"Copyright", own.Copyright}, [2]string{"License", own.License})
	for _, m := range mods {
		var lic, notice string
		for _, n := range licenseFiles {
			if bs, err := os.ReadFile(filepath.Join(m.Dir, n)); err == nil {
				lic = string(bs)
				break
			} else if !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		if lic == "" {
			return fmt.Errorf("module %s %s: no license file in %s", m.Path, m.Version, m.Dir)
		}
		if bs, err := os.ReadFile(filepath.Join(m.Dir, "NOTICE")); err == nil {
			notice = string(bs)
		}
		id, err := classify(lic)
		if err != nil {
			return fmt.Errorf("module %s %s: %v", m.Path, m.Version, err)
		}
		what := "Go module " + m.Path + " " + m.Version
		if m.Path == "std" {
			what = "the Go standard library and runtime, " + m.Version
		}
		cs := copyrights(lic, notice)
		if len(cs) == 0 {
			cs = []string{"the authors of " + m.Path}
		}
		comment := []string{what + ", linked into the commands."}
		if notice != "" {
			comment = append(comment, "Its NOTICE file:", "")
			comment = append(comment, text(notice)...)
		}
		license := []string{id}
		if id != "Apache-2.0" {
			license = append(license, text(lic)...)
		}
		para([2]string{"Files", m.Path + "/*"}, [2]string{"Copyright", field(cs)},
			[2]string{"Comment", field(comment)}, [2]string{"License", field(license)})
	}
	para([2]string{"License", field(apacheRef)})
	_, err := io.WriteString(w, b.String())
	return err
}
