//go:build !linux

package cache

import (
	"errors"
	"net"
)

// Elsewhere than Linux every connection has a goroutine (conn.serve).
type loop struct{ loopState }

type evConn struct{ nc net.Conn }

// servingLoop is nil: no loop serves a connection.
func (c *conn) servingLoop() *loopState { return nil }

func (s *Server) startLoops() error { return nil }

func (s *Server) stopLoops() {}

func (s *Server) adopt(net.Conn, net.Addr) (*conn, error) { return nil, errors.ErrUnsupported }
