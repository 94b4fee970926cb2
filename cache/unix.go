package cache

import (
	"context"
	"fmt"
	"net"
	"os"
)

// listenUnix listens on a unix stream socket like memcached -s: a stale
// socket file at path is removed first (any other file makes the bind
// fail), and the socket gets permission mode mask (-a). The listener
// removes the file when closed.
func listenUnix(ctx context.Context, path string, mask os.FileMode) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("cache: listen unix %s: %w", path, err)
	}
	if err := os.Chmod(path, mask&os.ModePerm); err != nil {
		l.Close()
		return nil, fmt.Errorf("cache: unix socket mode: %w", err)
	}
	return l, nil
}
