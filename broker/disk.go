package broker

import (
	"time"

	"golang.org/x/sys/unix"
)

// The disk alarm, as RabbitMQ's disk_free_limit: every diskCheckInterval
// the free space of the message store's filesystem (Config.StoreDir) is
// read; below Config.DiskFreeLimit the disk alarm goes on and publishers
// are blocked exactly as with the memory alarm (memory.go), with the
// reason "low on disk". Without a StoreDir nothing is written to disk and
// the alarm stays off. A failed reading keeps the previous state (logged).

const diskCheckInterval = time.Second

// statfsFree returns the bytes available to an unprivileged user on
// dir's filesystem (what df shows as Avail).
func statfsFree(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// watchDisk runs the disk alarm until Shutdown.
func (s *Server) watchDisk() {
	defer s.wg.Done()
	probe := s.cfg.diskFree
	if probe == nil {
		probe = statfsFree
	}
	interval := diskCheckInterval
	if s.cfg.diskInterval > 0 {
		interval = s.cfg.diskInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		free, err := probe(s.cfg.StoreDir)
		if err != nil {
			if !failing {
				s.log.Error("amqp: cannot read the free disk space", "dir", s.cfg.StoreDir, "err", err)
			}
			failing = true
		} else {
			failing = false
			s.diskFree.Store(free)
			low := free < s.cfg.DiskFreeLimit
			if s.alarm.set(resDisk, low) {
				if low {
					s.log.Warn("amqp disk alarm set: publishers are blocked", "free", free, "limit", s.cfg.DiskFreeLimit, "dir", s.cfg.StoreDir)
				} else {
					s.log.Info("amqp disk alarm cleared", "free", free, "limit", s.cfg.DiskFreeLimit, "dir", s.cfg.StoreDir)
				}
			}
		}
		select {
		case <-s.stopc:
			s.alarm.set(resDisk, false) // let blocked readers go to read their close-ok
			return
		case <-t.C:
		}
	}
}

// DiskAlarm reports whether the disk alarm is on.
func (s *Server) DiskAlarm() bool {
	on, _ := s.alarm.state()
	return on&resDisk != 0
}

// DiskFree returns the free bytes of the message store's filesystem at
// the last reading (0 before the first, or when the alarm is off).
func (s *Server) DiskFree() uint64 { return s.diskFree.Load() }

// DiskFreeLimit returns the disk alarm's threshold in bytes (0: off).
func (s *Server) DiskFreeLimit() uint64 { return s.cfg.DiskFreeLimit }
