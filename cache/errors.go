package cache

import "errors"

// Error is a protocol error. Reply is the exact line memcached 1.6.18 sends
// (without CRLF); an empty Reply with Close set means memcached drops the
// connection without answering. Errors are data: the connection loop writes
// Reply (unless the command asked for noreply) and closes if Close is set.
type Error struct {
	Reply string
	Close bool
	msg   string
}

func (e *Error) Error() string {
	if e.msg != "" {
		return "cache: " + e.msg
	}
	return "cache: " + e.Reply
}

// Protocol errors, named after their meaning; the Reply strings were checked
// byte for byte against memcached 1.6.18.
var (
	ErrUnknownCommand = &Error{Reply: "ERROR"} // also wrong token counts and empty lines
	ErrBadCommandLine = &Error{Reply: "CLIENT_ERROR bad command line format"}
	ErrBadDataChunk   = &Error{Reply: "CLIENT_ERROR bad data chunk"}
	ErrTooLarge       = &Error{Reply: "SERVER_ERROR object too large for cache"}
	ErrOutOfMemory    = &Error{Reply: "SERVER_ERROR out of memory storing object"}
	ErrBadExptime     = &Error{Reply: "CLIENT_ERROR invalid exptime argument"}
	ErrBadDelta       = &Error{Reply: "CLIENT_ERROR invalid numeric delta argument"}
	ErrNonNumeric     = &Error{Reply: "CLIENT_ERROR cannot increment or decrement non-numeric value"}
	ErrDeleteUsage    = &Error{Reply: "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"}
	ErrShutdownOff    = &Error{Reply: "ERROR: shutdown not enabled"}
	ErrStatsDetail    = &Error{Reply: "CLIENT_ERROR usage: stats detail on|off|dump"}
	ErrMemlimitSmall  = &Error{Reply: "MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m"}
	ErrMemlimitUnits  = &Error{Reply: "MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes"}
	ErrTooManyConns   = &Error{Reply: "ERROR Too many open connections", Close: true}

	// Meta protocol errors (always sent, even with q).
	ErrMetaInvalidFlag   = &Error{Reply: "CLIENT_ERROR invalid flag"}
	ErrMetaDuplicateFlag = &Error{Reply: "CLIENT_ERROR duplicate flag"}
	ErrMetaInvalidOrDup  = &Error{Reply: "CLIENT_ERROR invalid or duplicate flag"}
	ErrMetaBadToken      = &Error{Reply: "CLIENT_ERROR bad token in command line format"}
	ErrMetaOpaqueLong    = &Error{Reply: "CLIENT_ERROR opaque token too long"}
	ErrMetaKeyDecode     = &Error{Reply: "CLIENT_ERROR error decoding key"}
	ErrMetaMLength       = &Error{Reply: "CLIENT_ERROR incorrect length for M token"}
	ErrMetaSetMode       = &Error{Reply: "CLIENT_ERROR invalid mode for ms M token"}
	ErrMetaArithMode     = &Error{Reply: "CLIENT_ERROR invalid mode for ma M token"}
	ErrMetaInitial       = &Error{Reply: "CLIENT_ERROR invalid numeric initial value"}
	ErrMetaDeltaValue    = &Error{Reply: "CLIENT_ERROR invalid numeric delta value"}
	ErrMetaFlagsLong     = &Error{Reply: "CLIENT_ERROR options flags are too long"}
	ErrMetaFlagsTooLong  = &Error{Reply: "CLIENT_ERROR options flags too long"}

	// Errors that close the connection without a reply.
	ErrLineTooLong = &Error{Close: true, msg: "command line too long"}
	ErrHTTPRequest = &Error{Close: true, msg: "HTTP request on memcached port"}
)

// ErrIncomplete means the buffer does not yet hold a whole command; read
// more and parse again. It is not a protocol error.
var ErrIncomplete = errors.New("cache: incomplete command")

// ErrServerClosed is returned by Start after Shutdown.
var ErrServerClosed = errors.New("cache: server closed")
