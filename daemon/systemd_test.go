package daemon

import (
	"bytes"
	"testing"
)

func TestCPUMaskIsSystemdsLittleEndianBitmask(t *testing.T) {
	for list, want := range map[string][]byte{
		"0":       {0x01},
		"0-1":     {0x03},
		"0-3,8":   {0x0f, 0x01},
		"9-10":    {0x00, 0x06},
		"0-7,7":   {0xff},
		"3,1,0-1": {0x0b},
	} {
		got, err := cpuMask(list)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("cpuMask(%q) = %x, %v; want %x", list, got, err, want)
		}
	}
	for _, bad := range []string{"", "a", "3-1", "-1", "0-", "9000"} {
		if _, err := cpuMask(bad); err == nil {
			t.Errorf("cpuMask(%q) accepted", bad)
		}
	}
}
