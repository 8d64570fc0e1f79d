package main

import (
	"net"
	"os"
	"strconv"
	"time"
)

// sdNotify sends state ("READY=1", "STOPPING=1", "STATUS=...") to the
// service manager over the unix datagram socket named by $NOTIFY_SOCKET
// (sd_notify(3)); without the variable (not under systemd, or a unit that
// is not Type=notify) it does nothing. An address starting with @ is in the
// abstract namespace. A few lines instead of a dependency on go-systemd.
func sdNotify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	if name[0] == '@' {
		name = "\x00" + name[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}

// watchdogInterval is half of $WATCHDOG_USEC when the watchdog is meant for
// this process (WATCHDOG_PID unset or ours), else 0.
func watchdogInterval() time.Duration {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond / 2
}
