package weaknet

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns add` pins named namespaces.
const netnsDir = "/run/netns"

// namespace is a named network namespace made by `ip netns add`.
type namespace string

// labSeq numbers the labs of this process, so names stay unique even while a
// deleted namespace is still being torn down.
var labSeq atomic.Int64

// labNames are the two namespace names of a new lab of this process.
func labNames() (gw, cl namespace) {
	n := labSeq.Add(1)
	pid := os.Getpid()
	return namespace(fmt.Sprintf("imgate-gw-%d-%d", pid, n)), namespace(fmt.Sprintf("imgate-cl-%d-%d", pid, n))
}

// staleName matches a lab namespace and captures the pid of its harness.
var staleName = regexp.MustCompile(`^imgate-(?:gw|cl|chk)-(\d+)(?:-\d+)?$`)

// staleDir matches a lab's temporary directory and captures the pid.
var staleDir = regexp.MustCompile(`^imgate-weaknet-(\d+)-\d+$`)

// removeStale deletes lab namespaces and temporary directories whose harness
// process is gone (killed before its cleanup ran). Those of live harnesses
// are left alone.
func removeStale() {
	gone := func(re *regexp.Regexp, name string) bool {
		m := re.FindStringSubmatch(name)
		if m == nil {
			return false
		}
		pid, _ := strconv.Atoi(m[1])
		return pid != os.Getpid() && unix.Kill(pid, 0) == unix.ESRCH
	}
	if entries, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range entries {
			if gone(staleName, e.Name()) {
				namespace(e.Name()).delete()
			}
		}
	}
	if entries, err := os.ReadDir(os.TempDir()); err == nil {
		for _, e := range entries {
			if e.IsDir() && gone(staleDir, e.Name()) {
				os.RemoveAll(filepath.Join(os.TempDir(), e.Name()))
			}
		}
	}
}

// ipCommand runs `ip args...` with a bounded wait and returns its output in
// the error when it fails.
func ipCommand(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (ns namespace) create() error { return ipCommand("netns", "add", string(ns)) }

// delete removes the namespace's name; the kernel frees it, and the devices
// in it, once no process or descriptor holds it any more.
func (ns namespace) delete() error { return ipCommand("netns", "del", string(ns)) }

// ip runs `ip -n ns args...`.
func (ns namespace) ip(args ...string) error {
	return ipCommand(append([]string{"-n", string(ns)}, args...)...)
}

// addTUN creates a persistent TUN device in ns with addr (CIDR) and brings it
// up, with lo. The shim attaches to it by name later; until then the link has
// no carrier and packets into it are dropped.
func (ns namespace) addTUN(dev, addr string, mtu int) error {
	steps := [][]string{
		{"link", "set", "lo", "up"},
		{"tuntap", "add", "dev", dev, "mode", "tun"},
		{"link", "set", dev, "mtu", strconv.Itoa(mtu)},
		{"addr", "add", addr, "dev", dev},
		{"link", "set", dev, "up"},
	}
	for _, s := range steps {
		if err := ns.ip(s...); err != nil {
			return err
		}
	}
	return nil
}

// dial opens a connection from inside ns. The socket is made on an OS
// thread that entered ns and then ends (a thread that switched namespace
// never runs other goroutines); the connection itself works from any thread.
func (ns namespace) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked, on purpose
		fd, err := unix.Open(filepath.Join(netnsDir, string(ns)), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			res <- result{nil, fmt.Errorf("namespace %s: %w", ns, err)}
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			res <- result{nil, fmt.Errorf("enter namespace %s: %w", ns, err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		res <- result{c, err}
	}()
	r := <-res
	return r.c, r.err
}

// Available reports why labs cannot run here, or nil when they can: they need
// root, the ip command, /dev/net/tun, and the right to make namespaces and
// TUN devices in them (a container may have all the others but not these).
func Available() error {
	if uid := os.Geteuid(); uid != 0 {
		return fmt.Errorf("needs root to create network namespaces and TUN devices (running as uid %d)", uid)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("needs the ip command (iproute2): %w", err)
	}
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("needs /dev/net/tun: %w", err)
	}
	f.Close()
	removeStale()
	ns := namespace(fmt.Sprintf("imgate-chk-%d", os.Getpid()))
	if err := ns.create(); err != nil {
		return fmt.Errorf("cannot create a network namespace: %w", err)
	}
	defer ns.delete()
	if err := ns.ip("tuntap", "add", "dev", "chk0", "mode", "tun"); err != nil {
		return fmt.Errorf("cannot create a TUN device in a network namespace: %w", err)
	}
	return nil
}
