package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"imgate/gateway"
)

// Cluster queries, served on every node's admin port and HTTP API:
//
//	admin                                   HTTP
//	CLUSTER NODES                           GET /cluster/nodes
//	CLUSTER INFO                            GET /cluster/info
//	ONLINECOUNT                             GET /cluster/count
//	ONLINE <uid>                            GET /cluster/user?uid=
//	ROOMUSERS <room> [offset limit]         GET /cluster/room?name=&offset=&limit=
//	REGIONUSERS <region> [offset limit]     GET /cluster/region?name=&offset=&limit=
//
// Counts come from the nodes' heartbeats (at most a third of the liveness
// interval old); a user's connections and a region's from the registry;
// a room's members from every node at once (scatter-gather on <p>.q.room),
// since members are held by the nodes, not in the registry.

const (
	defaultPage  = 100
	queryTimeout = 5 * time.Second
)

func (n *Node) registerQueries() error {
	for _, c := range []struct {
		name     string
		min, max int
		fn       gateway.AdminFunc
	}{
		{"cluster", 1, 1, n.adminCluster},
		{"onlinecount", 0, 0, n.adminCount},
		{"online", 1, 1, n.adminOnline},
		{"roomusers", 1, 3, n.adminRoomUsers},
		{"regionusers", 1, 3, n.adminRegionUsers},
	} {
		if err := n.srv.HandleAdmin(c.name, c.min, c.max, c.fn); err != nil {
			return err
		}
	}
	n.srv.HandleHTTP("GET /cluster/nodes", n.httpNodes)
	n.srv.HandleHTTP("GET /cluster/info", n.httpInfo)
	n.srv.HandleHTTP("GET /cluster/count", n.httpCount)
	n.srv.HandleHTTP("GET /cluster/user", n.httpUser)
	n.srv.HandleHTTP("GET /cluster/room", n.httpRoom)
	n.srv.HandleHTTP("GET /cluster/region", n.httpRegion)
	return nil
}

// Counts is the cluster's online counts.
type Counts struct {
	Connections int            `json:"connections"`
	Users       int            `json:"users"` // summed over nodes: a user on two nodes counts twice
	Nodes       int            `json:"nodes"`
	ByNode      map[string]int `json:"by_node"`
	ByRegion    map[string]int `json:"by_region"`
}

// Nodes lists the live nodes, this one included.
func (n *Node) Nodes() []NodeStatus { return n.live.nodes() }

// Counts adds up the live nodes' heartbeats.
func (n *Node) Counts() Counts {
	c := Counts{ByNode: map[string]int{}, ByRegion: map[string]int{}}
	for _, st := range n.live.nodes() {
		c.Connections += st.Conns
		c.Users += st.Users
		c.Nodes++
		c.ByNode[st.Node] += st.Conns
		c.ByRegion[st.Region] += st.Conns
	}
	return c
}

// User returns a user's connections on every node, from the registry.
func (n *Node) User(ctx context.Context, uid string) ([]Entry, error) {
	_, out, err := n.registry.list(ctx, userFilter(uid), 0, 0)
	sortEntries(out)
	return out, err
}

// Region returns one page of a region's connections, from the registry.
func (n *Node) Region(ctx context.Context, region string, offset, limit int) (int, []Entry, error) {
	return n.registry.list(ctx, regionFilter(region), offset, limit)
}

// NodeEntries returns a node's registry entries (every incarnation).
func (n *Node) NodeEntries(ctx context.Context, node string) ([]Entry, error) {
	_, out, err := n.registry.list(ctx, nodeFilter(node), 0, 0)
	return out, err
}

func sortEntries(es []Entry) {
	sort.Slice(es, func(i, j int) bool {
		if es[i].Node != es[j].Node {
			return es[i].Node < es[j].Node
		}
		return es[i].Conn < es[j].Conn
	})
}

// RoomMember is one connection in a room, as room queries list it.
type RoomMember struct {
	Conn   string `json:"conn"`
	UID    string `json:"uid"`
	Device string `json:"device"`
	Node   string `json:"node"`
}

type roomQuery struct {
	From  string `json:"from"` // the asking node, which answers for itself
	Room  string `json:"room"`
	Limit int    `json:"limit"` // members wanted from each node (0: none, only the count)
}

type roomAnswer struct {
	Node    string       `json:"node"`
	Total   int          `json:"total"`
	Members []RoomMember `json:"members"`
}

func (n *Node) localRoom(room string, limit int) roomAnswer {
	a := roomAnswer{Node: n.cfg.NodeID}
	total, infos := n.srv.RoomMembers(room, 0, limit)
	a.Total = total
	if limit == 0 {
		return a
	}
	for _, in := range infos {
		a.Members = append(a.Members, RoomMember{Conn: in.ConnID, UID: in.UID, Device: in.Device, Node: n.cfg.NodeID})
	}
	return a
}

// answerRoomQuery serves <p>.q.room for the other nodes.
func (n *Node) answerRoomQuery(m *nats.Msg) {
	var q roomQuery
	if json.Unmarshal(m.Data, &q) != nil || m.Reply == "" || q.From == n.cfg.NodeID {
		return
	}
	a := n.localRoom(q.Room, max(q.Limit, 0))
	b, _ := json.Marshal(a)
	_ = m.Respond(b)
}

// Room returns one page of a room's members over every node: pages run
// through the nodes in node-id order, each node's members in its own order
// (like SCAN, a page may miss or repeat members that join or leave meanwhile).
func (n *Node) Room(ctx context.Context, room string, offset, limit int) (int, []RoomMember, error) {
	answers := []roomAnswer{n.localRoom(room, offset+limit)}
	if _, nc := n.paths.Active(); nc.IsConnected() {
		want := len(n.live.nodes()) - 1
		inbox := nc.NewRespInbox()
		ch := make(chan *nats.Msg, 64)
		sub, err := nc.ChanSubscribe(inbox, ch)
		if err != nil {
			return 0, nil, err
		}
		defer sub.Unsubscribe()
		q, _ := json.Marshal(roomQuery{From: n.cfg.NodeID, Room: room, Limit: offset + limit})
		if err := nc.PublishRequest(n.subj.RoomQuery(), inbox, q); err != nil {
			return 0, nil, err
		}
		wait := time.NewTimer(time.Second)
		defer wait.Stop()
	collect:
		for got := 0; got < want; {
			select {
			case m := <-ch:
				var a roomAnswer
				if json.Unmarshal(m.Data, &a) == nil {
					answers = append(answers, a)
					got++
				}
			case <-wait.C:
				break collect
			case <-ctx.Done():
				return 0, nil, ctx.Err()
			}
		}
	}
	sort.Slice(answers, func(i, j int) bool { return answers[i].Node < answers[j].Node })
	total := 0
	for _, a := range answers {
		total += a.Total
	}
	// Each node sent its first offset+limit; pages past a node's share
	// come from the nodes after it.
	var page []RoomMember
	skip := offset
	for _, a := range answers {
		if skip >= a.Total {
			skip -= a.Total
			continue
		}
		for _, m := range a.Members[min(skip, len(a.Members)):] {
			if len(page) == limit {
				break
			}
			page = append(page, m)
		}
		skip = 0
		if len(page) == limit {
			break
		}
	}
	return total, page, nil
}

// Info is the node's cluster counters.
func (n *Node) Info() map[string]any {
	rooms, users := n.interest.counts()
	r := n.registry
	n.live.mu.Lock()
	reaped := n.live.reaped
	n.live.mu.Unlock()
	return map[string]any{
		"node":                 n.cfg.NodeID,
		"boot":                 n.boot,
		"region":               n.cfg.Region,
		"bus_connected":        n.nc.IsConnected(),
		"bus_server":           n.nc.ConnectedUrlRedacted(),
		"bus_reconnects":       n.nc.Stats().Reconnects,
		"bus_in":               n.stats.busIn.Load(),
		"inbound_queued":       len(n.inbound[0]),
		"bus_paths":            len(n.paths.Conns()),
		"bus_duplicates":       n.stats.duplicates.Load(),
		"room_subscriptions":   rooms,
		"user_subscriptions":   users,
		"relayed":              n.stats.relayed.Load(),
		"relay_errors":         n.stats.relayErrors.Load(),
		"svid_requests":        n.stats.requests.Load(),
		"svid_errors":          n.stats.requestErrors.Load(),
		"svid_timeouts":        n.stats.requestTimeouts.Load(),
		"svid_pending":         n.router.pending(),
		"registry_ready":       r.ready.Load(),
		"registry_writes":      r.writes.Load(),
		"registry_resyncs":     r.resyncs.Load(),
		"registry_queue":       len(r.ops),
		"registry_dropped_ops": r.dropped.Load(),
		"nodes_reaped":         reaped,
		"handoff_held":         n.handoff.held.Load(),
		"handoff_claimed":      n.handoff.claimed.Load(),
		"handoff_unclaimed":    n.handoff.unclaimed.Load(),
		"handoff_expired":      n.handoff.expired.Load(),
		"handoff_dropped":      n.handoff.dropped.Load(),
		"handoff_delivered":    n.handoff.delivered.Load(),
		"handoff_forwarded":    n.handoff.forwarded.Load(),
		"handoff_shared":       n.handoff.shared.Load(),
	}
}

// Admin commands.

func (n *Node) adminCluster(args []string) (any, error) {
	switch strings.ToLower(args[0]) {
	case "nodes":
		var out []string
		for _, st := range n.Nodes() {
			out = append(out, fmt.Sprintf("node=%s boot=%s region=%s conns=%d users=%d rooms=%d age=%d",
				st.Node, st.Boot, st.Region, st.Conns, st.Users, st.Rooms, int64(time.Since(st.Started).Seconds())))
		}
		return out, nil
	case "info":
		info := n.Info()
		keys := make([]string, 0, len(info))
		for k := range info {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		b.WriteString("# Cluster\r\n")
		for _, k := range keys {
			fmt.Fprintf(&b, "%s:%v\r\n", k, info[k])
		}
		return b.String(), nil
	}
	return nil, fmt.Errorf("unknown subcommand '%s'. Try CLUSTER NODES or CLUSTER INFO.", args[0])
}

func (n *Node) adminCount([]string) (any, error) {
	c := n.Counts()
	out := []any{"connections", c.Connections, "users", c.Users, "nodes", c.Nodes}
	for _, k := range sortedKeys(c.ByNode) {
		out = append(out, "node:"+k, c.ByNode[k])
	}
	for _, k := range sortedKeys(c.ByRegion) {
		out = append(out, "region:"+k, c.ByRegion[k])
	}
	return out, nil
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func entryLine(e Entry) string {
	return fmt.Sprintf("conn=%s uid=%s device=%s node=%s region=%s transport=%s since=%s",
		e.Conn, e.UID, e.Device, e.Node, e.Region, e.Transport, e.Since.UTC().Format(time.RFC3339))
}

func (n *Node) adminOnline(args []string) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	es, err := n.User(ctx, args[0])
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(es))
	for _, e := range es {
		out = append(out, entryLine(e))
	}
	return out, nil
}

func pageArgs(args []string) (offset, limit int, err error) {
	offset, limit = 0, defaultPage
	if len(args) == 2 {
		return 0, 0, errors.New("give offset and limit, or neither")
	}
	if len(args) == 3 {
		if offset, err = strconv.Atoi(args[1]); err == nil {
			limit, err = strconv.Atoi(args[2])
		}
		if err != nil || offset < 0 || limit < 0 {
			return 0, 0, errors.New("value is not an integer or out of range")
		}
	}
	return offset, limit, nil
}

func (n *Node) adminRoomUsers(args []string) (any, error) {
	return adminPage(args, n.Room, func(m RoomMember) string {
		return fmt.Sprintf("conn=%s uid=%s device=%s node=%s", m.Conn, m.UID, m.Device, m.Node)
	})
}

func (n *Node) adminRegionUsers(args []string) (any, error) {
	return adminPage(args, n.Region, entryLine)
}

// adminPage answers a paged admin query (NAME [offset [limit]]) with one
// line per item.
func adminPage[T any](args []string, fetch func(ctx context.Context, name string, offset, limit int) (int, []T, error), line func(T) string) (any, error) {
	offset, limit, err := pageArgs(args)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	_, items, err := fetch(ctx, args[0], offset, limit)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, line(it))
	}
	return out, nil
}

// HTTP routes.

func (n *Node) httpNodes(w http.ResponseWriter, r *http.Request) {
	gateway.WriteJSON(w, http.StatusOK, map[string]any{"nodes": n.Nodes()})
}

func (n *Node) httpInfo(w http.ResponseWriter, r *http.Request) {
	gateway.WriteJSON(w, http.StatusOK, n.Info())
}

func (n *Node) httpCount(w http.ResponseWriter, r *http.Request) {
	gateway.WriteJSON(w, http.StatusOK, n.Counts())
}

func (n *Node) httpUser(w http.ResponseWriter, r *http.Request) {
	uid := r.URL.Query().Get("uid")
	if uid == "" {
		gateway.HTTPError(w, http.StatusBadRequest, "uid is required")
		return
	}
	es, err := n.User(r.Context(), uid)
	if err != nil {
		gateway.HTTPError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if es == nil {
		es = []Entry{}
	}
	gateway.WriteJSON(w, http.StatusOK, map[string]any{"uid": uid, "sessions": es})
}

func queryPage(w http.ResponseWriter, r *http.Request) (name string, offset, limit int, ok bool) {
	q := r.URL.Query()
	name = q.Get("name")
	if name == "" {
		gateway.HTTPError(w, http.StatusBadRequest, "name is required")
		return "", 0, 0, false
	}
	offset, limit = 0, defaultPage
	var err error
	if v := q.Get("offset"); v != "" {
		if offset, err = strconv.Atoi(v); err != nil || offset < 0 {
			gateway.HTTPError(w, http.StatusBadRequest, "offset must be a non-negative integer")
			return "", 0, 0, false
		}
	}
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 0 {
			gateway.HTTPError(w, http.StatusBadRequest, "limit must be a non-negative integer")
			return "", 0, 0, false
		}
	}
	return name, offset, limit, true
}

func (n *Node) httpRoom(w http.ResponseWriter, r *http.Request) {
	servePage(w, r, "room", "members", n.Room)
}

func (n *Node) httpRegion(w http.ResponseWriter, r *http.Request) {
	servePage(w, r, "region", "connections", n.Region)
}

// servePage answers a paged query: {key: name, total: count, "sessions": page}.
func servePage[T any](w http.ResponseWriter, r *http.Request, key, total string,
	fetch func(ctx context.Context, name string, offset, limit int) (int, []T, error)) {
	name, offset, limit, ok := queryPage(w, r)
	if !ok {
		return
	}
	count, page, err := fetch(r.Context(), name, offset, limit)
	if err != nil {
		gateway.HTTPError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if page == nil {
		page = []T{}
	}
	gateway.WriteJSON(w, http.StatusOK, map[string]any{key: name, total: count, "sessions": page})
}
