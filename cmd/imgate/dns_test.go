package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"imgate/gateway"
)

// The [dns] table, its flags and environment land in the DNS config.
func TestDNSOptions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.toml")
	os.WriteFile(path, []byte(`[dns]
enabled = true
zone = "gw.example.com"
hostnames = ["gw.example.com", "push.gw.example.com"]
ttl = "3s"
max_answers = 6
trust_forwarded = true
[[dns.nameserver]]
name = "ns1.gw.example.com"
addrs = ["192.0.2.53"]
[[dns.region]]
name = "eu"
cidrs = ["10.1.0.0/16"]
fallback = ["us"]
[[dns.region]]
name = "us"
cidrs = ["10.2.0.0/16"]
`), 0o600)
	t.Setenv("IMGATE_DNS_HTTP", "127.0.0.1:0")
	o, err := loadOptions("dns", []string{"--config", path, "--dns-listen", "127.0.0.1:5353"},
		options{Gateway: gateway.DefaultConfig(), Cluster: defaultClusterConfig(), Route: defaultRouteConfig(), DNS: defaultDNSConfig()})
	if err != nil {
		t.Fatal(err)
	}
	d := o.DNS
	if !d.Enabled || d.Zone != "gw.example.com" || len(d.Hostnames) != 2 || d.TTL != 3*time.Second || d.MaxAnswers != 6 || !d.TrustForwarded ||
		d.Listen != "127.0.0.1:5353" || d.HTTPAddr != "127.0.0.1:0" || len(d.Nameservers) != 1 || d.Nameservers[0].Addrs[0] != "192.0.2.53" ||
		len(d.Regions) != 2 || d.Regions[0].Fallback[0] != "us" || d.Regions[1].CIDRs[0] != "10.2.0.0/16" {
		t.Fatalf("dns: %+v", d)
	}
	if !dnsRole("dns", d) || !dnsRole("all", d) || dnsRole("route", d) || dnsRole("all", defaultDNSConfig()) {
		t.Error("dnsRole")
	}
}

// `imgate dns` as systemd runs it: READY=1 once listening, even with the
// bus unreachable (it keeps reconnecting); SERVFAIL while no gateway is
// known, /healthz 503 while the bus is down; SIGHUP reloads [dns];
// SIGTERM ends it cleanly.
func TestDNSProcess(t *testing.T) {
	dig, err := exec.LookPath("dig")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("dig not found and CI is set: install dnsutils")
		}
		t.Skip("dig not installed (apt-get install dnsutils)")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	port, web := freePort(t), freePort(t)
	conf := filepath.Join(dir, "dns.toml")
	natsPort := freePort(t)
	write := func(extra string) {
		os.WriteFile(conf, []byte(fmt.Sprintf("[cluster]\nnats = [\"nats://127.0.0.1:%d\"]\n[dns]\nzone = \"gw.test\"\nlisten = \"127.0.0.1:%d\"\nhttp_addr = \"127.0.0.1:%d\"\n%s",
			natsPort, port, web, extra)), 0o600)
	}
	write("")
	if out, err := exec.Command(bin, "config", "check", conf).CombinedOutput(); err != nil {
		t.Fatalf("config check: %v\n%s", err, out)
	}
	cmd, notes, exited := startNotified(t, bin, "dns", "--config", conf, "--data", dir, "--log-level", "warn")
	status := func(name string) string {
		out, _ := exec.Command(dig, "@127.0.0.1", "-p", fmt.Sprint(port), "+time=2", "+tries=1", name, "A").CombinedOutput()
		_, s, _ := strings.Cut(string(out), "status: ")
		s, _, _ = strings.Cut(s, ",")
		return s
	}
	if s := status("gw.test"); s != "SERVFAIL" {
		t.Errorf("no gateway known: %s, want SERVFAIL", s)
	}
	if s := status("edge.gw.test"); s != "NXDOMAIN" {
		t.Errorf("edge.gw.test before the reload: %s, want NXDOMAIN", s)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", web))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/healthz with the bus down: %s, want 503", resp.Status)
	}
	// SIGHUP re-reads [dns]: edge.gw.test becomes a gateway hostname.
	write("hostnames = [\"edge.gw.test\"]\n")
	cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for status("edge.gw.test") != "SERVFAIL" {
		if time.Now().After(deadline) {
			t.Fatal("edge.gw.test not a hostname after SIGHUP")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	expectNotify(t, notes, "STOPPING=1")
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10s after SIGTERM")
	}
}
