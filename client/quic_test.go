package client

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"imgate/gateway"
	"imgate/proto"
	"imgate/transport"
)

// The library over quic:// against a real gateway: auth, join, a request
// answered by the echo SVID, a room push.
func TestQUICAgainstGateway(t *testing.T) {
	cfg := gateway.DefaultConfig()
	cfg.Listen = []string{"quic://127.0.0.1:0"}
	cfg.AdminAddr, cfg.HTTPAddr, cfg.DataDir, cfg.EchoSVID = "", "", t.TempDir(), 1
	key := gateway.KeyConfig{ID: "k", Alg: "HS256", Secret: "client-quic-secret-0123456789abcdef"}
	cfg.Auth.Keys = []gateway.KeyConfig{key}
	s, err := gateway.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var url string
	for _, l := range s.Listeners() {
		if l.Kind() == transport.KindQUIC {
			url = l.URL()
		}
	}
	tok, err := gateway.MintToken(key, gateway.Claims{UID: "q", Expiry: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	pushes := make(chan Push, 4)
	c := DefaultConfig()
	c.Endpoints = []string{url}
	c.Token = tok
	c.TLSConfig = &tls.Config{InsecureSkipVerify: true} // the node's generated development certificate
	c.OnPush = func(p Push) { pushes <- p }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := Dial(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Join(ctx, "q-room"); err != nil {
		t.Fatal(err)
	}
	if reply, err := cl.Request(ctx, 1, []byte("over quic")); err != nil || string(reply) != "over quic" {
		t.Fatalf("echo: %q %v", reply, err)
	}
	if n := s.PushRoom("q-room", proto.Push{Payload: []byte("pushed")}); n != 1 {
		t.Fatalf("pushed to %d", n)
	}
	select {
	case p := <-pushes:
		if string(p.Payload) != "pushed" || p.Topic != "q-room" {
			t.Fatalf("push %+v", p)
		}
	case <-ctx.Done():
		t.Fatal("no push")
	}
}
