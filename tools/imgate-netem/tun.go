package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openTUN attaches to the TUN device name in the calling thread's network
// namespace, creating it if it does not exist (the harness creates it first,
// persistent, so that it can give it addresses before the shim starts). The
// device carries bare IP packets (IFF_NO_PI): one read returns one packet, one
// write injects one.
//
// The descriptor is non-blocking and handed to os.NewFile, so reads and
// writes park on the runtime's poller instead of holding a thread each, and
// Close wakes a blocked Read.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %q: TUNSETIFF: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "tun:"+name), nil
}
