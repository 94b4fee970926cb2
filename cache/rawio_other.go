//go:build !linux

package cache

import (
	"io"
	"net"
)

// rawIO is Linux-only; elsewhere connections use net.Conn directly.
type rawIO struct{ io.ReadWriter }

func newRawIO(net.Conn) *rawIO { return nil }
