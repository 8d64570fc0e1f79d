package proto

import (
	"errors"
	"fmt"
)

// Code is a wire error or close-reason code (uint16). Codes below 100 answer
// a request or a bad frame (OpError, or OpClose when fatal); codes from 100
// say why the server closed a connection (OpClose).
type Code uint16

// Error codes.
const (
	CodeBadFrame        Code = 1  // frame cannot be parsed (fatal)
	CodeFrameTooLarge   Code = 2  // frame longer than max_frame (fatal)
	CodeUnknownOp       Code = 3  // op not defined in this version (fatal)
	CodeBadVersion      Code = 4  // version byte is not 1 (fatal)
	CodeNotAuthed       Code = 5  // a frame other than AUTH before AUTH_OK (fatal)
	CodeAuthFailed      Code = 6  // token malformed, forged, or from an unknown key (fatal)
	CodeTokenExpired    Code = 7  // token past its exp (fatal)
	CodeAuthTimeout     Code = 8  // no AUTH within the auth deadline (fatal)
	CodeAlreadyAuthed   Code = 9  // a second AUTH on an authenticated connection
	CodeNoHandler       Code = 10 // no backend serves this SVID
	CodeTimeout         Code = 11 // backend did not answer in time
	CodeBackendError    Code = 12 // backend answered with an error
	CodeRoomLimit       Code = 13 // connection already in max rooms
	CodeRoomForbidden   Code = 14 // token does not allow this room
	CodeBadRequest      Code = 15 // body of a known op is malformed
	CodeRateLimited     Code = 16 // too many requests
	CodeInternal        Code = 17 // server-side failure
	CodeUnsupported     Code = 18 // op known but not served by this node (e.g. SYNC without storage)
	CodeNotInRoom       Code = 19 // LEAVE for a room the connection is not in
	CodeClientDirection Code = 20 // a server-to-client op sent by a client (fatal)
	CodeTooEarly        Code = 21 // a request that is not safe to replay arrived in 0-RTT data; resend after the handshake
)

// Close reasons.
const (
	CodeNormal           Code = 100 // orderly close
	CodeKicked           Code = 101 // an operator or backend kicked the connection
	CodeReplaced         Code = 102 // the same user+device logged in again
	CodeHeartbeatTimeout Code = 103 // two heartbeat intervals passed in silence
	CodeSlowConsumer     Code = 104 // outbound queue over its byte limit
	CodeTooManyConns     Code = 105 // user over the per-user connection limit
	CodeShutdown         Code = 106 // node is shutting down or draining
	CodeProtocolError    Code = 107 // transport-level violation (e.g. unmasked WebSocket frame)
)

var codeNames = map[Code]string{
	CodeBadFrame: "BAD_FRAME", CodeFrameTooLarge: "FRAME_TOO_LARGE", CodeUnknownOp: "UNKNOWN_OP",
	CodeBadVersion: "BAD_VERSION", CodeNotAuthed: "NOT_AUTHENTICATED", CodeAuthFailed: "AUTH_FAILED",
	CodeTokenExpired: "TOKEN_EXPIRED", CodeAuthTimeout: "AUTH_TIMEOUT", CodeAlreadyAuthed: "ALREADY_AUTHENTICATED",
	CodeNoHandler: "NO_HANDLER", CodeTimeout: "TIMEOUT", CodeBackendError: "BACKEND_ERROR",
	CodeRoomLimit: "ROOM_LIMIT", CodeRoomForbidden: "ROOM_FORBIDDEN", CodeBadRequest: "BAD_REQUEST",
	CodeRateLimited: "RATE_LIMITED", CodeInternal: "INTERNAL", CodeUnsupported: "UNSUPPORTED",
	CodeNotInRoom: "NOT_IN_ROOM", CodeClientDirection: "WRONG_DIRECTION", CodeTooEarly: "TOO_EARLY",
	CodeNormal: "NORMAL", CodeKicked: "KICKED", CodeReplaced: "REPLACED",
	CodeHeartbeatTimeout: "HEARTBEAT_TIMEOUT", CodeSlowConsumer: "SLOW_CONSUMER",
	CodeTooManyConns: "TOO_MANY_CONNS", CodeShutdown: "SHUTDOWN", CodeProtocolError: "PROTOCOL_ERROR",
}

func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("CODE(%d)", uint16(c))
}

// Fatal reports whether a server sends OpClose (not OpError) for this code.
func (c Code) Fatal() bool {
	switch c {
	case CodeBadFrame, CodeFrameTooLarge, CodeUnknownOp, CodeBadVersion, CodeNotAuthed,
		CodeAuthFailed, CodeTokenExpired, CodeAuthTimeout, CodeClientDirection:
		return true
	}
	return c >= 100
}

// Error is a protocol error carrying its wire code; it is what handlers return
// so that the gateway can answer with the right frame.
type Error struct {
	Code Code
	Msg  string
}

func (e *Error) Error() string { return e.Code.String() + ": " + e.Msg }

// Errorf builds an *Error.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// CodeOf maps a decode error to its wire code.
func CodeOf(err error) Code {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrTooLarge):
		return CodeFrameTooLarge
	case errors.Is(err, ErrVersion):
		return CodeBadVersion
	case errors.Is(err, ErrUnknownOp):
		return CodeUnknownOp
	case errors.Is(err, ErrBadBody):
		return CodeBadRequest
	}
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	return CodeBadFrame
}
