// Package baseline runs the two reference points that imgate-bench compares the
// gateway against in the same run: a real nats-server fanning out to real nats.go
// subscribers, and the "floor", a process that does nothing but write(2) the same
// bytes to every socket.
//
// Invariants shared by both baselines:
//   - Every message is a PayloadSize-byte payload whose first 16 bytes are the
//     publish time (unix nanoseconds) and the message sequence number, both
//     big-endian uint64 (see StampPayload and ReadPayload).
//   - onMsg(receiver, payload) is called in arrival order for one receiver, and may
//     be called concurrently for different receivers.
//   - The payload slice is only valid during the call: the floor client reuses its
//     read buffer, so a callback that keeps bytes must copy them.
//   - Nothing is logged or allocated per message by this package on the floor path;
//     nats.go allocates one copy of each message's data (that is part of what the
//     NATS baseline measures).
package baseline
