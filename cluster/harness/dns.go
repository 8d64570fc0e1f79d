package harness

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DNS is an `imgate dns` process: the smart-DNS responder (UDP and TCP on
// Port) and its HTTP port (HTTPDNS, /metrics, /readyz).
type DNS struct {
	*Proc
	Port, HTTP int
}

// Addr is the responder's address.
func (d *DNS) Addr() string { return fmt.Sprintf("127.0.0.1:%d", d.Port) }

// StartDNS starts `imgate dns` on the NATS cluster with the given [dns]
// settings and [[dns.region]] tables (TOML lines; listen and http_addr
// are filled in), and waits until it answers HTTP.
func (c *Cluster) StartDNS(name string, dnsTOML ...string) (*DNS, error) {
	port, err := freeUDPTCPPort()
	if err != nil {
		return nil, err
	}
	web, err := FreePort()
	if err != nil {
		return nil, err
	}
	var urls []string
	for _, u := range c.NATSURLs() {
		urls = append(urls, fmt.Sprintf("%q", u))
	}
	conf := fmt.Sprintf("[cluster]\nnats = [%s]\nliveness = %q\n\n[dns]\nlisten = \"127.0.0.1:%d\"\nhttp_addr = \"127.0.0.1:%d\"\n%s\n",
		strings.Join(urls, ", "), c.Liveness, port, web, strings.Join(dnsTOML, "\n"))
	path := filepath.Join(c.Dir, name+".toml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	p, err := start(name, filepath.Join(c.Dir, name+".log"), c.Bin.Imgate, "dns", "--config", path, "--data", filepath.Join(c.Dir, name), "--log-level", "info")
	if err != nil {
		return nil, err
	}
	c.track(p)
	d := &DNS{Proc: p, Port: port, HTTP: web}
	err = Wait(15*time.Second, func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", web))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		return d, fmt.Errorf("dns %s not healthy\n%s", name, p.Tail(20))
	}
	return d, nil
}

// freeUDPTCPPort returns a loopback port free for both UDP and TCP now.
func freeUDPTCPPort() (int, error) {
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		pc.Close()
		if err == nil {
			l.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("no port free for both UDP and TCP")
}
