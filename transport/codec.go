package transport

import "imgate/proto"

// sink is the connection side a codec reports to.
type sink interface {
	// deliver hands one whole frame to the handler.
	deliver(f proto.Frame) error
	// reply queues a transport-level frame (pong, close echo, handshake answer).
	reply(f Frame)
	// upgraded reports a completed WebSocket handshake.
	upgraded()
	// finish closes after last without an imgate CLOSE frame.
	finish(last Frame)
}

// codec turns inbound bytes into frames for one connection. It is used by
// one goroutine at a time (the connection's reader).
type codec struct {
	sink     sink
	maxFrame int
	partial  []byte // pooled; a half-received frame, nil when none
	need     int    // total size of the frame in partial, 0 while unknown
	ws       *wsState
}

// feed consumes data, which the caller may reuse once feed returns.
func (d *codec) feed(data []byte) error {
	if d.ws != nil {
		return d.feedWS(data)
	}
	return d.feedStream(data)
}

// release returns held buffers to their pools.
func (d *codec) release() {
	putBuf(d.partial)
	d.partial, d.need = nil, 0
	if d.ws != nil {
		putBuf(d.ws.msg)
		d.ws.msg = nil
	}
}

// feedStream parses length-prefixed frames. Whole frames are delivered
// straight from data; only the tail of a frame split across reads is copied,
// into a buffer sized for that frame.
func (d *codec) feedStream(data []byte) error {
	for len(data) > 0 {
		if d.partial != nil {
			var err error
			if data, err = d.fillPartial(data); err != nil {
				return err
			}
			continue // data is empty when the frame is still short
		}
		f, n, err := proto.Decode(data, d.maxFrame)
		if err != nil {
			return err
		}
		if n == 0 {
			d.need = 0
			if len(data) >= 4 {
				d.need, _ = proto.FrameSize(data[:4], d.maxFrame)
			}
			d.partial = append(getBuf(max(d.need, len(data))), data...)
			return nil
		}
		if err := d.sink.deliver(f); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// fillPartial moves bytes from data into the pending frame and delivers it
// when whole. It leaves d.partial non-nil while the frame is still short.
func (d *codec) fillPartial(data []byte) ([]byte, error) {
	if d.need == 0 {
		k := min(4-len(d.partial), len(data))
		d.partial = append(d.partial, data[:k]...)
		data = data[k:]
		if len(d.partial) < 4 {
			return data, nil
		}
		size, err := proto.FrameSize(d.partial[:4], d.maxFrame)
		if err != nil {
			return data, err
		}
		d.need = size
		d.partial = growBuf(d.partial, size)
	}
	k := min(d.need-len(d.partial), len(data))
	d.partial = append(d.partial, data[:k]...)
	data = data[k:]
	if len(d.partial) < d.need {
		return data, nil
	}
	f, err := proto.DecodeExact(d.partial, d.maxFrame)
	if err == nil {
		err = d.sink.deliver(f)
	}
	putBuf(d.partial)
	d.partial, d.need = nil, 0
	return data, err
}
