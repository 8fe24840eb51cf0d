package runner

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// personality(2) values: the ADDR_NO_RANDOMIZE flag (linux/personality.h)
// and the argument that only reads the current persona.
const (
	addrNoRandomize  = 0x0040000
	personalityQuery = 0xffffffff
)

// personality calls personality(2) and returns the persona before the call.
func personality(persona uint) (uint, error) {
	r, _, errno := unix.RawSyscall(unix.SYS_PERSONALITY, uintptr(persona), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return uint(uint32(r)), nil
}

// disableASLR sets ADDR_NO_RANDOMIZE in the calling thread's persona, so
// that a program it execs (and that program's children) get the same
// addresses every run. The persona is per thread: the caller locks its
// goroutine to the thread and execs from it. It fails with ErrNoASLR when
// the kernel refuses (a seccomp filter, such as a container's default one,
// allows personality(2) only for a few values) or does not keep the flag.
func disableASLR() error {
	cur, err := personality(personalityQuery)
	if err != nil {
		return fmt.Errorf("%w: personality: %v", ErrNoASLR, err)
	}
	if _, err := personality(cur | addrNoRandomize); err != nil {
		return fmt.Errorf("%w: personality(ADDR_NO_RANDOMIZE): %v", ErrNoASLR, err)
	}
	if now, err := personality(personalityQuery); err != nil || now&addrNoRandomize == 0 {
		return fmt.Errorf("%w: the kernel did not keep ADDR_NO_RANDOMIZE", ErrNoASLR)
	}
	return nil
}

// CheckNoASLR reports, with an error wrapping ErrNoASLR, whether this
// process cannot turn address-space randomization off for a job, so that a
// job asking for it fails before it waits in line. It tries on a thread of
// its own that it then lets the runtime discard: this process's other
// threads, and the programs it starts, keep their persona.
func CheckNoASLR() error {
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the thread ends with this goroutine.
		runtime.LockOSThread()
		done <- disableASLR()
	}()
	return <-done
}
