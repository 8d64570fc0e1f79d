package baseline

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat. Linux reports them
// in USER_HZ, which is 100 on every architecture it exports to userspace
// (sysconf(_SC_CLK_TCK) returns it, but is unreachable from Go without cgo). At 10 ms
// resolution, read CPU over runs of seconds, not single rounds.
const clockTick = 10 * time.Millisecond

// CPUTime returns the user plus system CPU time pid has used so far, all threads
// included (children excluded).
func CPUTime(pid int) (time.Duration, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu time of %d: %w", pid, err)
	}
	ticks, err := parseStatTicks(stat)
	if err != nil {
		return 0, fmt.Errorf("cpu time of %d: %w", pid, err)
	}
	return time.Duration(ticks) * clockTick, nil
}

// parseStatTicks returns utime+stime, in clock ticks, from a /proc/<pid>/stat line.
func parseStatTicks(stat []byte) (int64, error) {
	// The command name (field 2) is in parentheses and may hold spaces or ')', so
	// count fields from after the last ')': state is field 3, utime 14, stime 15.
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, fmt.Errorf("malformed stat %q", stat)
	}
	fields := bytes.Fields(stat[end+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("malformed stat %q", stat)
	}
	utime, err := strconv.ParseUint(string(fields[14-3]), 10, 62)
	if err != nil {
		return 0, fmt.Errorf("utime: %w", err)
	}
	stime, err := strconv.ParseUint(string(fields[15-3]), 10, 62)
	if err != nil {
		return 0, fmt.Errorf("stime: %w", err)
	}
	return int64(utime + stime), nil
}

// RSS returns pid's resident set size in bytes (VmRSS).
func RSS(pid int) (int64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("rss of %d: %w", pid, err)
	}
	rss, err := parseVmRSS(status)
	if err != nil {
		return 0, fmt.Errorf("rss of %d: %w", pid, err)
	}
	return rss, nil
}

// parseVmRSS returns the VmRSS line of a /proc/<pid>/status file in bytes.
func parseVmRSS(status []byte) (int64, error) {
	for line := range bytes.Lines(status) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		// "VmRSS:	   12345 kB"
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("malformed line %q", line)
		}
		kb, err := strconv.ParseUint(string(f[0]), 10, 53)
		if err != nil {
			return 0, fmt.Errorf("VmRSS: %w", err)
		}
		return int64(kb) << 10, nil
	}
	return 0, errors.New("no VmRSS (a zombie or kernel thread?)")
}

// TCPMemPages reads the TCP "mem" field (pages of socket buffers) of
// /proc/net/sockstat.
func TCPMemPages() int {
	data, _ := os.ReadFile("/proc/net/sockstat")
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "TCP:" {
			for i := 1; i+1 < len(f); i += 2 {
				if f[i] == "mem" {
					n, _ := strconv.Atoi(f[i+1])
					return n
				}
			}
		}
	}
	return 0
}

// SlabBytes reads Slab from /proc/meminfo: the kernel object caches where
// socket structures (sock, inode, file, epoll item) live.
func SlabBytes() int64 {
	data, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Slab:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}
