package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// paragraph is one DEP-5 paragraph: field name to value, continuation
// lines joined with "\n".
type paragraph map[string]string

// parse splits a DEP-5 file into paragraphs, failing on a line that is
// neither a field nor a continuation.
func parse(t *testing.T, s string) []paragraph {
	t.Helper()
	var out []paragraph
	var cur paragraph
	var last string
	for i, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		switch {
		case line == "":
			cur = nil
		case line[0] == ' ' || line[0] == '\t':
			if cur == nil || last == "" {
				t.Fatalf("line %d: a continuation outside a field: %q", i+1, line)
			}
			cur[last] += "\n" + line[1:]
		default:
			name, value, ok := strings.Cut(line, ": ")
			if !ok || strings.ContainsAny(name, " \t") {
				t.Fatalf("line %d: not a field: %q", i+1, line)
			}
			if cur == nil {
				cur = paragraph{}
				out = append(out, cur)
			}
			if _, dup := cur[name]; dup {
				t.Fatalf("line %d: field %s twice in a paragraph", i+1, name)
			}
			cur[name], last = value, name
		}
	}
	return out
}

// The copyright file of the real commands: machine-readable, perflock's own
// license first, and a paragraph with copyright and license for every
// module linked in, whose license is given in full or in a standalone
// paragraph.
func TestRenderTheCommandsCopyright(t *testing.T) {
	own, err := ReadProject("../../../LICENSE")
	if err != nil {
		t.Fatal(err)
	}
	if own.License != "Apache-2.0" || own.Holder() != "The perflock Authors" || !strings.HasSuffix(own.Copyright, " The perflock Authors") {
		t.Fatalf("LICENSE read as %+v", own)
	}
	if m := own.Maintainer(); m != "The perflock Authors <perflock@users.noreply.github.com>" {
		t.Errorf("maintainer %q", m)
	}
	mods, err := Linked(Commands)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Render(&b, own, mods); err != nil {
		t.Fatal(err)
	}
	ps := parse(t, b.String())
	if ps[0]["Format"] != "https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/" || ps[0]["Upstream-Name"] != "perflock" {
		t.Errorf("header %v", ps[0])
	}
	if p := ps[1]; p["Files"] != "*" || p["Copyright"] != own.Copyright || p["License"] != "Apache-2.0" {
		t.Errorf("the first Files paragraph is %v, want perflock's own", p)
	}
	standalone := map[string]bool{}
	files := map[string]paragraph{}
	for _, p := range ps[1:] {
		if f, ok := p["Files"]; ok {
			files[f] = p
		} else if l, ok := p["License"]; ok {
			name, _, _ := strings.Cut(l, "\n")
			standalone[name] = true
		} else {
			t.Errorf("a paragraph with neither Files nor License: %v", p)
		}
	}
	for f, p := range files {
		name, text, _ := strings.Cut(p["License"], "\n")
		if p["Copyright"] == "" || name == "" || (text == "" && !standalone[name]) {
			t.Errorf("Files: %s: copyright %q, license %q with no text", f, p["Copyright"], name)
		}
	}
	paths := []string{"std"}
	for _, m := range mods {
		if files[m.Path+"/*"] == nil {
			t.Errorf("no paragraph for module %s", m.Path)
		}
		paths = append(paths, m.Path)
	}
	for _, want := range []string{"github.com/godbus/dbus/v5", "golang.org/x/sys"} {
		if !slices.Contains(paths, want) {
			t.Errorf("the modules linked in %v do not include %s", paths, want)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"Apache License\n  Version 2.0, January 2004", "Apache-2.0"},
		{"Permission is hereby granted, free of charge, to any person", "Expat"},
		{"Redistribution and use in source and binary forms ... Neither the name of Google", "BSD-3-clause"},
		{"Redistribution and use in source\n and binary forms, with or without", "BSD-2-clause"},
		{"Mozilla Public License Version 2.0", "MPL-2.0"},
		{"Do what you like.", ""},
		{"MIT and Apache License Version 2.0: Permission is hereby granted, free of charge", ""},
	} {
		got, err := classify(tc.text)
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("classify(%q) = %q, %v; want %q", tc.text, got, err, tc.want)
		}
	}
}

func TestCopyrights(t *testing.T) {
	got := copyrights("   Copyright [yyyy] [name of copyright owner]\n"+
		"      copyright notice that is included\n"+
		"Copyright (c) 2012 Alex Ogier. All rights reserved.\n"+
		"Copyright The containerd Authors\n",
		"Copyright (c) 2012 Alex Ogier. All rights reserved.\nCopyright © 2020 Someone\n")
	want := []string{"2012 Alex Ogier.", "The containerd Authors", "2020 Someone"}
	if !slices.Equal(got, want) {
		t.Errorf("copyrights = %q, want %q", got, want)
	}
}

// A module whose license cannot be named, or that has none, fails the
// render: the package must not ship it unnamed.
func TestRenderRefusesAnUnknownLicense(t *testing.T) {
	dir := t.TempDir()
	own := Project{Copyright: "2026 The perflock Authors", License: "Apache-2.0"}
	if err := Render(&bytes.Buffer{}, own, []Module{{Path: "example.com/none", Version: "v1", Dir: dir}}); err == nil || !strings.Contains(err.Error(), "no license file") {
		t.Errorf("no license file: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "COPYING"), []byte("Do what you like.\n"), 0o644)
	if err := Render(&bytes.Buffer{}, own, []Module{{Path: "example.com/odd", Version: "v1", Dir: dir}}); err == nil || !strings.Contains(err.Error(), "cannot name the license") {
		t.Errorf("unknown license: %v", err)
	}
}
