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

func (s *Server) adoptFD(int, net.Addr, net.Addr) (*conn, error) { return nil, errors.ErrUnsupported }

// rawAccepter: none elsewhere (newRawAccepter returns nil).
type rawAccepter struct{ net.Listener }

func (s *Server) newRawAccepter(net.Listener) *rawAccepter { return nil }

func (a *rawAccepter) accept() (int, net.Addr, error) { return -1, nil, errors.ErrUnsupported }

func fdConn(int) (net.Conn, error) { return nil, errors.ErrUnsupported }
