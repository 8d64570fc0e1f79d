package main

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"imgate/bench/load"
)

// baddata: garbage datagrams from several source addresses to each UDP
// listener (QUIC, KCP), and what each rejected one costs the gateway in CPU.
// The gateway counts what it rejects (imgate_udp_bad_datagrams_total), so
// the cost is divided by what it really received, not by what was sent
// (the kernel drops what overflows the socket buffer; that is reported).
func (b *bench) baddata() error {
	g, err := b.startGateway()
	if err != nil {
		return err
	}
	defer g.stop()
	targets := b.o.badTargets
	if len(targets) == 0 {
		targets = []string{"quic://" + g.target.QUIC}
		if g.target.KCP != "" {
			targets = append(targets, "kcp://"+g.target.KCP)
		}
	}
	var worst float64
	for _, raw := range targets {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			return fmt.Errorf("--baddata-targets %q: want scheme://host:port", raw)
		}
		ns, err := b.badDatagrams(g, u.Scheme, u.Host)
		if err != nil {
			return fmt.Errorf("%s: %w", raw, err)
		}
		b.results.Set("bad_datagram_ns_"+u.Scheme, ns)
		b.row("baddata", "gateway ns per bad datagram, "+u.Scheme, ns, 0, 0)
		worst = max(worst, ns)
	}
	b.results.Set("bad_datagram_ns", worst)
	return nil
}

// badDatagrams sends b.o.badN datagrams to addr and returns the gateway's
// CPU nanoseconds per datagram it rejected.
func (b *bench) badDatagrams(g *node, kind, addr string) (float64, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return 0, err
	}
	srcs := b.srcs[:min(8, len(b.srcs))]
	socks := make([]*net.UDPConn, len(srcs))
	for i, ip := range srcs {
		if socks[i], err = net.ListenUDP("udp", &net.UDPAddr{IP: ip}); err != nil {
			return 0, err
		}
		defer socks[i].Close()
	}
	// The gateway's own CPU at rest, over as long as the flood will take,
	// is subtracted: it is not the datagrams' doing.
	n, rate := b.o.badN, b.o.badRate
	span := time.Duration(float64(n) / rate * float64(time.Second))
	idle0 := g.cpu()
	time.Sleep(span)
	idleRate := float64(g.cpu()-idle0) / float64(span)

	counted0, counting := g.badCount(kind)
	kernel0 := udpRcvbufErrors()
	var prof <-chan error
	if secs := int(span.Seconds()) - 1; secs >= 1 {
		// Where the time goes, over the middle of the flood.
		prof = g.profile(time.Duration(secs)*time.Second, filepath.Join(b.o.out, "baddata_"+kind+".pprof"))
	}
	cpu0 := g.cpu()
	start := time.Now()
	per := n / len(socks)
	var wg sync.WaitGroup
	for i, s := range socks {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			buf := make([]byte, 1400)
			load.Pace(rate/float64(len(socks)), per, func(int) {
				// Random sizes and bytes: the first byte decides which of
				// the node's paths rejects it (not QUIC, short header for no
				// connection, long header of an unknown version...).
				k := 20 + rng.IntN(1300)
				for j := 0; j < k; j += 8 {
					v := rng.Uint64()
					for m := 0; m < 8 && j+m < k; m++ {
						buf[j+m] = byte(v >> (8 * m))
					}
				}
				s.WriteToUDP(buf[:k], ua)
			})
		})
	}
	wg.Wait()
	sent := per * len(socks)
	// Wait until the node has counted all it will count (every scrape of
	// /metrics costs the node CPU too, so few of them).
	counted := int64(sent)
	if counting {
		last, still := int64(-1), 0
		for still < 2 && time.Since(start) < span+30*time.Second {
			time.Sleep(250 * time.Millisecond)
			c, _ := g.badCount(kind)
			if c-counted0 == int64(sent) {
				last = c
				break
			}
			if c == last {
				still++
			} else {
				still, last = 0, c
			}
		}
		counted = last - counted0
	}
	wall := time.Since(start)
	cpu := float64(g.cpu()-cpu0) - idleRate*float64(wall)
	if prof != nil {
		if err := <-prof; err != nil {
			b.progress.Done("profile: %v", err)
		}
	}
	kernelDrops := udpRcvbufErrors() - kernel0
	if !counting && g.pid != 0 {
		counted -= kernelDrops // no count from the node: trust the kernel's
	}
	if counted <= 0 {
		return 0, fmt.Errorf("the node rejected none of %d datagrams", sent)
	}
	ns := max(cpu, 0) / float64(counted)
	b.progress.Done("baddata %s: %d sent from %d addresses, %d rejected by the node (counted: %v), %d dropped by the kernel; %.0f ns of gateway CPU each",
		kind, sent, len(socks), counted, counting, kernelDrops, ns)
	return ns, nil
}

// badCount sums the node's imgate_udp_bad_datagrams_total for one transport;
// ok is false when the node does not report it.
func (n *node) badCount(kind string) (total int64, ok bool) {
	resp, err := http.Get("http://" + n.target.HTTP + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	label := `transport="` + kind + `"`
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "imgate_udp_bad_datagrams_total{") || !strings.Contains(line, label) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			total += int64(v)
			ok = true
		}
	}
	return total, ok
}

// udpRcvbufErrors is the host's count of UDP datagrams dropped because a
// socket's receive buffer was full.
func udpRcvbufErrors() int64 {
	data, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	var header []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if header == nil {
			header = f
			continue
		}
		for i, name := range header {
			if name == "RcvbufErrors" && i < len(f) {
				v, _ := strconv.ParseInt(f[i], 10, 64)
				return v
			}
		}
	}
	return 0
}
