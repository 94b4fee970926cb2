//go:build !unix

package cache

import (
	"fmt"
	"net"
)

// setBacklog cannot change Go's backlog where listen(2) cannot be called
// again: only the default is accepted there.
func setBacklog(l net.Listener, n int) error {
	if n != DefaultBacklog {
		return fmt.Errorf("cache: listen backlog %d on %s: not supported on this platform", n, l.Addr())
	}
	return nil
}
