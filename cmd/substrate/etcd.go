package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"substrate/internal/config"
	"substrate/internal/lifecycle"
	"substrate/internal/logging"
	"substrate/internal/preflight"
	"substrate/kvstore"
)

// etcd runs only the kvstore with etcd's command line and ETCD_* environment,
// so that an etcd unit file (Debian's etcd.service, RDO's) can point at
// substrate unchanged.
func etcd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if etcdHelpOrVersion(args, stdout, stderr) {
		return nil
	}
	t0 := time.Now()
	log := logging.New(stderr, slog.LevelInfo)
	kc := kvstore.NewConfig()
	kc.EtcdDefaults = true
	kc.Args = args
	kc.Vars = config.Environ("ETCD")
	kc.Logger = log
	kc.LogLevel = slog.LevelInfo // etcd's default
	kv, err := kvstore.New(kc)
	if err != nil {
		if errors.Is(err, kvstore.ErrBadFlag) {
			return usageError{err} // etcd exits 2 on a bad flag too
		}
		return err
	}
	lock, err := preflight.LockDir(kv.EtcdConfig().Dir)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	if err := preflight.Ports(kv.Ports()); err != nil {
		return err
	}
	return runServices(ctx, log, t0, []lifecycle.Service{kv}, kv.Ports(), nil)
}
