package main

import (
	"fmt"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// namespacePath turns a name given to `ip netns add` into the file that
// pins it; a value with a slash is taken as a path already (/proc/PID/ns/net).
func namespacePath(ns string) string {
	if strings.Contains(ns, "/") {
		return ns
	}
	return filepath.Join("/run/netns", ns)
}

// inNamespace runs fn on an OS thread that has entered the network namespace
// ns ("" runs fn in the current one). What fn opens there (a TUN, a socket)
// stays in that namespace and may be used from any thread afterwards.
//
// The thread is locked for good and so ends with its goroutine: a thread that
// has switched namespace must never go back to running other goroutines.
func inNamespace(ns string, fn func() error) error {
	if ns == "" {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked, on purpose
		path := namespacePath(ns)
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("namespace %s: %w", path, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
