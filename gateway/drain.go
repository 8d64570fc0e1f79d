package gateway

import (
	"time"

	"imgate/proto"
)

// Draining (lame duck) takes a node out of service without dropping its
// users at once: the stream listeners close (the kernel refuses new TCP
// connections), new KCP and QUIC sessions are answered with CLOSE SHUTDOWN
// (their listener shares one UDP socket with the live sessions, so it stays
// open), /readyz answers 503 so the load balancer stops sending clients,
// and the open connections are closed with CLOSE SHUTDOWN ("reconnect
// elsewhere now") one after another, spread evenly over the drain period, so
// that the reconnects reach the other nodes as a trickle, not a storm.
// Drained is closed when the node is empty or the period is over, whichever
// comes first; the caller then Closes the server.

// drainReason is the CLOSE reason a drained client reads.
const drainReason = "node draining: reconnect elsewhere now"

// Drain starts draining over period (<= 0: Config.DrainTimeout) and returns
// at once. It reports false when a drain had already begun (the first
// period stands).
func (s *Server) Drain(period time.Duration) bool {
	if period <= 0 {
		period = s.cfg.DrainTimeout
	}
	started := false
	s.drainOnce.Do(func() {
		started = true
		s.draining.Store(true)
		s.log.Info("draining", "period", period)
		if d, ok := s.observer.(DrainObserver); ok {
			d.NodeDraining()
		}
		for _, l := range s.Listeners() {
			if !l.Kind().Datagrams() {
				l.Close()
			}
		}
		go s.drain(period)
	})
	return started
}

// Draining reports whether Drain has begun.
func (s *Server) Draining() bool { return s.draining.Load() }

// Drained is closed when a drain has finished: every connection is gone or
// the period is over.
func (s *Server) Drained() <-chan struct{} { return s.drained }

func (s *Server) drain(period time.Duration) {
	defer close(s.drained)
	start := time.Now()
	deadline := start.Add(period)
	var sessions []*Session
	s.reg.Each(func(x *Session) bool { sessions = append(sessions, x); return true })
	// Spread the n closes over the period: close i at start + period*i/n,
	// so the last goes out one step before the end and its client has time
	// to leave before the node exits.
	n := len(sessions)
	t := time.NewTimer(0)
	defer t.Stop()
	for i, x := range sessions {
		at := start.Add(period * time.Duration(i) / time.Duration(n))
		if wait := time.Until(at); wait > 0 {
			t.Reset(wait)
			select {
			case <-t.C:
			case <-s.stop:
				return
			}
		}
		kick := func() { x.Kick(proto.CodeShutdown, drainReason) }
		if d, ok := s.observer.(DrainObserver); ok && x.authed.Load() {
			d.DrainKick(x, kick)
		} else {
			kick()
		}
	}
	// Wait for the peers to go (their closes take up to the linger), or the
	// end of the period.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if conns, _ := s.reg.Counts(); conns == 0 {
			s.log.Info("drained", "connections", n, "took", time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			conns, _ := s.reg.Counts()
			s.log.Warn("drain period over with connections left", "left", conns)
			return
		}
		select {
		case <-tick.C:
		case <-s.stop:
			return
		}
	}
}
