package weaknet

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// adminConn speaks the gateway's redis-protocol admin port, one command at a
// time: a push's reply (connections reached) decides whether the message
// counts as sent to the client, so every reply is read before the next
// command. At the rates a weak-network run uses (tens of messages a second)
// one round trip on the gateway's loopback is nothing.
type adminConn struct {
	c net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

// adminTimeout bounds one command.
const adminTimeout = 5 * time.Second

func newAdminConn(c net.Conn) *adminConn {
	return &adminConn{c: c, r: bufio.NewReader(c), w: bufio.NewWriter(c)}
}

// do sends one command and returns its reply: the integer of ":n", the text
// of "+OK"; an error reply ("-ERR ...") is an error.
func (a *adminConn) do(args ...[]byte) (int64, string, error) {
	a.c.SetDeadline(time.Now().Add(adminTimeout))
	fmt.Fprintf(a.w, "*%d\r\n", len(args))
	for _, arg := range args {
		fmt.Fprintf(a.w, "$%d\r\n", len(arg))
		a.w.Write(arg)
		a.w.WriteString("\r\n")
	}
	if err := a.w.Flush(); err != nil {
		return 0, "", fmt.Errorf("admin: %w", err)
	}
	line, err := a.r.ReadString('\n')
	if err != nil {
		return 0, "", fmt.Errorf("admin: %w", err)
	}
	if len(line) < 3 {
		return 0, "", fmt.Errorf("admin: short reply %q", line)
	}
	body := line[1 : len(line)-2]
	switch line[0] {
	case ':':
		n, err := strconv.ParseInt(body, 10, 64)
		return n, body, err
	case '+':
		return 0, body, nil
	case '-':
		return 0, body, errors.New("admin: " + body)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil {
			return 0, "", fmt.Errorf("admin: bad bulk reply %q", line)
		}
		if n < 0 {
			return 0, "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(a.r, buf); err != nil {
			return 0, "", fmt.Errorf("admin: %w", err)
		}
		return 0, string(buf[:n]), nil
	}
	return 0, "", fmt.Errorf("admin: unexpected reply %q", line)
}

// ping checks that the gateway answers.
func (a *adminConn) ping() error {
	_, s, err := a.do([]byte("PING"))
	if err == nil && s != "PONG" {
		err = fmt.Errorf("admin: PING answered %q", s)
	}
	return err
}

// push sends payload to every connection of uid and returns how many it
// reached.
func (a *adminConn) push(uid string, payload []byte) (int64, error) {
	n, _, err := a.do([]byte("PUSH"), []byte(uid), payload)
	return n, err
}

func (a *adminConn) close() error { return a.c.Close() }
