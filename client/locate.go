package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// HTTPDNS returns an EndpointsFunc that asks an imgate HTTPDNS endpoint
// (a gateway's HTTP API or `imgate dns`'s HTTP port, apiURL like
// "https://gw.example.com:7190") for the gateways nearest this client,
// healthy and not draining, best first: GET /v1/endpoints?transport=...
// transport ("tcp", "ws", "quic", ...; "" for every kind) picks the URLs.
func HTTPDNS(apiURL, transport string) func(ctx context.Context) ([]string, error) {
	return httpDNS(http.DefaultClient, apiURL, transport)
}

func httpDNS(hc *http.Client, apiURL, transport string) func(ctx context.Context) ([]string, error) {
	endpoint := strings.TrimRight(apiURL, "/") + "/v1/endpoints"
	if transport != "" {
		endpoint += "?transport=" + url.QueryEscape(transport)
	}
	return func(ctx context.Context) ([]string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
		if err != nil {
			return nil, fmt.Errorf("httpdns: %w", err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, fmt.Errorf("httpdns: %w", err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return nil, fmt.Errorf("httpdns: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("httpdns: %s: %s", resp.Status, strings.TrimSpace(string(body)))
		}
		var answer struct {
			Endpoints []struct {
				URL string `json:"url"`
			} `json:"endpoints"`
		}
		if err := json.Unmarshal(body, &answer); err != nil {
			return nil, fmt.Errorf("httpdns: %w", err)
		}
		var out []string
		for _, e := range answer.Endpoints {
			out = append(out, e.URL)
		}
		return out, nil
	}
}

// refreshEndpoints asks cfg.EndpointsFunc for the current list at the start
// of a connect pass. On error, or an empty or unusable list, the current
// list stays. Endpoints already known keep their state (a QUIC endpoint's
// session tickets for 0-RTT); a changed list is tried from its first
// entry, the best by the answer's ranking. It runs where connectPass runs
// (Dial, then the supervisor goroutine), which own the endpoint list.
func (c *Client) refreshEndpoints(ctx context.Context) error {
	if c.cfg.EndpointsFunc == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	raw, err := c.cfg.EndpointsFunc(ctx)
	if err != nil {
		c.log.Warn("imgate endpoints refresh failed; keeping the current list", "err", err)
		return err
	}
	var next []endpoint
	var bad []error
	for _, r := range raw {
		if i := slices.IndexFunc(c.endpoints, func(e endpoint) bool { return e.raw == r }); i >= 0 {
			next = append(next, c.endpoints[i])
			continue
		}
		ep, err := parseEndpoint(r)
		if err != nil {
			bad = append(bad, err)
			continue
		}
		next = append(next, ep)
	}
	if len(next) == 0 {
		err := errors.Join(append([]error{errors.New("client: endpoints refresh gave no usable endpoint")}, bad...)...)
		c.log.Warn("imgate endpoints refresh empty; keeping the current list", "err", err)
		return err
	}
	same := len(next) == len(c.endpoints)
	for i := range next {
		if same && next[i].raw != c.endpoints[i].raw {
			same = false
		}
	}
	if !same {
		c.endpoints = next
		c.nextEndpoint = 0
	}
	return nil
}
