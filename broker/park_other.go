//go:build !linux

package broker

import (
	"errors"
	"time"
)

const idleParkAfter = 0 // never: there is no parker

// parker: without epoll, idle connections keep their reader goroutine.
type parker struct{}

func newParker() (*parker, error) { return nil, errors.New("idle connections park only on Linux") }

func (p *parker) park(*conn, time.Duration) bool { return false }

func (p *parker) closeSocket(c *conn) bool {
	c.nc.Close()
	return false
}

func (p *parker) close() {}

func (p *parker) count() int { return 0 }
