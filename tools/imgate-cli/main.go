// Command imgate-cli is an interactive imgate client for trying a gateway by
// hand: it prints every push and state change, and turns stdin lines into
// requests.
//
//	imgate-cli [--url tcp://127.0.0.1:7100] [--token T | --token-file F] [--join room,...] [--svid N]
//
// Lines read from stdin:
//
//	/join ROOM        join a room
//	/leave ROOM       leave a room
//	/req SVID TEXT    send TEXT to service SVID, print the reply
//	/ack CONV SEQ     acknowledge messages of CONV up to SEQ
//	/quit             close and exit
//	anything else     sent to --svid, reply printed
//
// It exits cleanly on end of stdin, /quit or SIGINT, and with status 1 when
// the server ends the session for good (REPLACED, KICKED, ...).
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"imgate/client"
	"imgate/proto"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// options are the parsed command line.
type options struct {
	urls      []string
	token     string
	tokenFile string
	join      []string
	svid      uint32
	timeout   time.Duration
	insecure  bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("imgate-cli", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "tcp://127.0.0.1:7100", "gateway endpoints, comma-separated (tcp://, tls://, ws://, wss://)")
	fs.StringVar(&o.token, "token", "", "auth token")
	fs.StringVar(&o.tokenFile, "token-file", "", "file holding the auth token, read again on every reconnect")
	join := fs.String("join", "", "rooms to join at start, comma-separated")
	svid := fs.Uint("svid", 1, "service id that plain lines are sent to")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "request timeout")
	fs.BoolVar(&o.insecure, "insecure", false, "skip TLS certificate verification (tls://, wss://)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if o.token != "" && o.tokenFile != "" {
		return o, errors.New("--token and --token-file are exclusive")
	}
	if *svid > 1<<32-1 {
		return o, fmt.Errorf("--svid %d out of range", *svid)
	}
	o.svid = uint32(*svid)
	o.urls = splitList(*url)
	o.join = splitList(*join)
	if len(o.urls) == 0 {
		return o, errors.New("--url is empty")
	}
	return o, nil
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// printer serializes output lines from the push, state and input paths.
type printer struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *printer) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format+"\n", args...)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "imgate-cli:", err)
		return 2
	}
	out := &printer{w: stdout}

	cfg := client.DefaultConfig()
	cfg.Endpoints = o.urls
	cfg.Token = o.token
	cfg.RequestTimeout = o.timeout
	if o.tokenFile != "" {
		path := o.tokenFile
		cfg.TokenFunc = func(context.Context) (string, error) {
			b, err := os.ReadFile(path)
			return strings.TrimSpace(string(b)), err
		}
	}
	if o.insecure {
		cfg.TLSConfig = &tls.Config{InsecureSkipVerify: true}
	}
	cfg.OnPush = func(p client.Push) { out.printf("%s", formatPush(p)) }
	cfg.OnState = func(st client.State, err error) {
		if err != nil {
			out.printf("* %s: %v", st, err)
		} else {
			out.printf("* %s", st)
		}
	}

	c, err := client.Dial(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "imgate-cli:", err)
		return 1
	}
	defer c.Close()
	out.printf("* conn=%d node=%s heartbeat=%s", c.ConnID(), c.NodeID(), c.HeartbeatInterval())
	for _, room := range o.join {
		execute(ctx, c, out, command{kind: cmdJoin, room: room}, o.svid)
	}

	lines := make(chan string)
	done := make(chan struct{})
	defer close(done)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdin)
		sc.Buffer(make([]byte, 64<<10), proto.MaxFrameLimit)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-done:
				return
			}
		}
	}()

	for {
		select {
		case <-ctx.Done():
			return 0
		case <-c.Closed():
			if err := c.Err(); !errors.Is(err, client.ErrClosed) {
				fmt.Fprintln(stderr, "imgate-cli: session ended:", err)
				return 1
			}
			return 0
		case line, ok := <-lines:
			if !ok {
				return 0
			}
			cmd, err := parseLine(line)
			if err != nil {
				out.printf("! %v", err)
				continue
			}
			if cmd.kind == cmdQuit {
				return 0
			}
			execute(ctx, c, out, cmd, o.svid)
		}
	}
}

type cmdKind int

const (
	cmdNone cmdKind = iota // empty line
	cmdJoin
	cmdLeave
	cmdRequest
	cmdAck
	cmdQuit
)

// command is one parsed stdin line.
type command struct {
	kind      cmdKind
	room      string
	svid      uint32
	hasSVID   bool // false: send to --svid
	text      string
	conv, seq uint64
}

func parseLine(line string) (command, error) {
	if strings.TrimSpace(line) == "" {
		return command{kind: cmdNone}, nil
	}
	if !strings.HasPrefix(line, "/") {
		return command{kind: cmdRequest, text: line}, nil
	}
	name, rest, _ := strings.Cut(line, " ")
	rest = strings.TrimSpace(rest)
	switch name {
	case "/join", "/leave":
		if rest == "" || strings.ContainsAny(rest, " \t") {
			return command{}, fmt.Errorf("usage: %s ROOM", name)
		}
		if name == "/join" {
			return command{kind: cmdJoin, room: rest}, nil
		}
		return command{kind: cmdLeave, room: rest}, nil
	case "/req":
		id, text, _ := strings.Cut(rest, " ")
		svid, err := strconv.ParseUint(id, 10, 32)
		if err != nil {
			return command{}, errors.New("usage: /req SVID TEXT")
		}
		return command{kind: cmdRequest, svid: uint32(svid), hasSVID: true, text: text}, nil
	case "/ack":
		f := strings.Fields(rest)
		if len(f) != 2 {
			return command{}, errors.New("usage: /ack CONV SEQ")
		}
		conv, err1 := strconv.ParseUint(f[0], 10, 64)
		seq, err2 := strconv.ParseUint(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			return command{}, errors.New("usage: /ack CONV SEQ")
		}
		return command{kind: cmdAck, conv: conv, seq: seq}, nil
	case "/quit":
		return command{kind: cmdQuit}, nil
	}
	return command{}, fmt.Errorf("unknown command %s (try /join, /leave, /req, /ack, /quit)", name)
}

// execute runs one command and prints its outcome.
func execute(ctx context.Context, c *client.Client, out *printer, cmd command, defaultSVID uint32) {
	switch cmd.kind {
	case cmdJoin:
		if err := c.Join(ctx, cmd.room); err != nil {
			out.printf("! %v", err)
		} else {
			out.printf("* joined %s", cmd.room)
		}
	case cmdLeave:
		if err := c.Leave(ctx, cmd.room); err != nil {
			out.printf("! %v", err)
		} else {
			out.printf("* left %s", cmd.room)
		}
	case cmdRequest:
		svid := defaultSVID
		if cmd.hasSVID {
			svid = cmd.svid
		}
		reply, err := c.Request(ctx, svid, []byte(cmd.text))
		if err != nil {
			out.printf("! %v", err)
		} else {
			out.printf("< svid=%d %s", svid, formatPayload(reply))
		}
	case cmdAck:
		if err := c.Ack(cmd.conv, cmd.seq); err != nil {
			out.printf("! %v", err)
		}
	}
}

// formatPush renders a push as "[room] conv=.. seq=.. payload".
func formatPush(p client.Push) string {
	where := p.Topic
	switch {
	case where != "":
	case p.Flags&proto.FlagBroadcast != 0:
		where = "broadcast"
	default:
		where = "direct"
	}
	var resend string
	if p.Flags&proto.FlagResend != 0 {
		resend = " resend"
	}
	return fmt.Sprintf("[%s] conv=%d seq=%d%s %s", where, p.ConvID, p.Seq, resend, formatPayload(p.Payload))
}

// formatPayload prints text as is and anything else as hex.
func formatPayload(b []byte) string {
	if utf8.Valid(b) && !strings.ContainsFunc(string(b), func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }) {
		return string(b)
	}
	return "hex:" + hex.EncodeToString(b)
}
