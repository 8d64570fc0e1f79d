package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"imgate/gateway"
)

// The [cluster] and [route] tables, the cluster flags and their
// environment variables land in the cluster and route configs.
func TestClusterOptions(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.toml")
	os.WriteFile(path, []byte(`node_id = "n1"
[cluster]
region = "eu-west"
nats = ["nats://a:4222", "nats://b:4222"]
liveness = "2s"
kv_replicas = 3
advertise_host = "203.0.113.5"
capacity = 500000
handoff_hold = "5s"
handoff_bytes = 65536
handoff_timeout = "1s"
[cluster.embedded]
listen = "127.0.0.1:0"
[route]
http_addr = "127.0.0.1:0"
[[route.svid]]
svid = 2
url = "http://127.0.0.1:9002/"
retries = 4
`), 0o600)
	t.Setenv("IMGATE_REQUEST_TIMEOUT", "750ms")
	o, err := loadOptions("gateway", []string{"--config", path, "--region", "us-east"},
		options{Gateway: gateway.DefaultConfig(), Cluster: defaultClusterConfig(), Route: defaultRouteConfig()})
	if err != nil {
		t.Fatal(err)
	}
	c := o.Cluster
	if c.Region != "us-east" || len(c.NATS) != 2 || c.Liveness != 2*time.Second || c.Replicas != 3 || c.RequestTimeout != 750*time.Millisecond || c.Embedded.Listen != "127.0.0.1:0" {
		t.Fatalf("cluster: %+v", c)
	}
	if c.AdvertiseHost != "203.0.113.5" || c.Capacity != 500000 || c.HandoffHold != 5*time.Second || c.HandoffBytes != 65536 || c.HandoffTimeout != time.Second {
		t.Fatalf("cluster advertise/capacity/handoff: %+v", c)
	}
	if o.Gateway.NodeID != "n1" || o.Route.HTTPAddr != "127.0.0.1:0" || len(o.Route.Bridges) != 1 || o.Route.Bridges[0].Retries != 4 {
		t.Fatalf("gateway %q, route %+v", o.Gateway.NodeID, o.Route)
	}
	for _, f := range []string{"node1.toml", "node2.toml", "node3.toml"} {
		if _, err := decodeFile(filepath.Join("..", "..", "docs", "cluster", f)); err != nil {
			t.Errorf("docs/cluster/%s: %v", f, err)
		}
	}
}
