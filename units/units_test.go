package units

import (
	"errors"
	"fmt"
	"testing"

	godbus "github.com/godbus/dbus/v5"
)

func TestDBusErrorName(t *testing.T) {
	val := godbus.Error{Name: errUnitExists}
	ptr := &godbus.Error{Name: "org.freedesktop.systemd1.NoSuchUnit"}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{errors.New("plain"), ""},
		{fmt.Errorf("units: start x.scope: %w", val), errUnitExists},
		{fmt.Errorf("units: start x.scope: %w", ptr), "org.freedesktop.systemd1.NoSuchUnit"},
	} {
		if got := dbusErrorName(tc.err); got != tc.want {
			t.Errorf("dbusErrorName(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]int{`"252.22-1~deb12u1"`: 252, `"257.9-1~deb13u1"`: 257, "246": 246} {
		if got, err := parseVersion(in); err != nil || got != want {
			t.Errorf("parseVersion(%s) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := parseVersion(`"x"`); err == nil {
		t.Error("parseVersion accepted a version without a number")
	}
}

func TestUnitType(t *testing.T) {
	for in, want := range map[string]string{"system.slice": "Slice", "init.scope": "Scope", "a.b.service": "Service"} {
		if got, err := unitType(in); err != nil || got != want {
			t.Errorf("unitType(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"system", "system."} {
		if _, err := unitType(bad); err == nil {
			t.Errorf("unitType(%q) accepted", bad)
		}
	}
}
