package main

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"substrate/cache"
	"substrate/internal/faults"
	internalmetrics "substrate/internal/metrics"
	"substrate/internal/mgmtapi"
)

// The sources of the RabbitMQ and memcached metrics. The collectors are
// registered once per process (tests run serve many times) and read
// whichever broker and cache are current.
var (
	cacheMetrics atomic.Pointer[cache.Server]
	// brokerIdentity is the node, cluster and permanent cluster id of
	// rabbitmq_identity_info, set by serve.
	brokerIdentity atomic.Pointer[identity]
	processStart   = time.Now()
)

// identity is what serve knows of the broker beyond its methods.
type identity struct {
	node, cluster, clusterID string
	maxConns                 int    // --amqp-max-connections; 0: unlimited
	dataDir                  string // --data-dir
}

// rabbitmqVersion is the RabbitMQ release whose behaviour the broker
// follows: rabbitmq_build_info's rabbitmq_version.
const rabbitmqVersion = "3.10.8"

// newIdentity names the node as the management API does (RabbitMQ's
// default, rabbit@ and the short host name), the cluster as the broker's
// cluster_name server property does, and derives a permanent cluster id
// from the host and the data directory: stable across restarts, as
// RabbitMQ's is.
func newIdentity(dataDir string, maxConns int) *identity {
	host, _ := os.Hostname()
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		abs = dataDir
	}
	sum := sha256.Sum256([]byte(host + "\x00" + abs))
	return &identity{node: mgmtapi.DefaultNode(), cluster: "substrate@" + host,
		clusterID: "rabbitmq-cluster-id-" + base64.RawURLEncoding.EncodeToString(sum[:16]),
		maxConns:  maxConns, dataDir: dataDir}
}

// perObjectMetrics is /metrics/per-object's registry: the broker per
// queue, channel and connection, as rabbitmq_prometheus serves it.
var perObjectMetrics = prometheus.NewRegistry()

func init() {
	prometheus.MustRegister(internalmetrics.RabbitMQ{Source: brokerStats})
	perObjectMetrics.MustRegister(internalmetrics.RabbitMQ{PerObject: true, Source: brokerStats})
	prometheus.MustRegister(internalmetrics.Memcached{Source: func() internalmetrics.StatsSource {
		// Not listening (not yet started, or stopped): memcached_up 0, as
		// memcached_exporter reports a server it cannot reach.
		if c := cacheMetrics.Load(); c != nil {
			if _, _, _, ok := c.ProbeTarget(); ok {
				return recoveringStats{c}
			}
		}
		return nil
	}})
}

// recoveringStats contains a panic of the cache's stats to the scrape
// (the registry collects in goroutines of its own, where a panic would end
// the process): counted in substrate_panics_total{service="http"}, the
// group reads as failed and memcached_up as 0.
type recoveringStats struct{ c *cache.Server }

func (r recoveringStats) StatsGroup(group string) (st map[string]string, err error) {
	defer faults.Recover(nil, faults.HTTP, "metrics scrape", func(v any) { st, err = nil, fmt.Errorf("panic: %v", v) })
	return r.c.StatsGroup(group)
}

// brokerStats reads the current broker's figures for one scrape. A panic
// is contained as recoveringStats's is: the scrape has no broker series.
func brokerStats() (st internalmetrics.BrokerStats, ok bool) {
	defer faults.Recover(nil, faults.HTTP, "metrics scrape", func(any) { st, ok = internalmetrics.BrokerStats{}, false })
	b := brokerMetrics.Load()
	if b == nil {
		return internalmetrics.BrokerStats{}, false
	}
	id := brokerIdentity.Load()
	if id == nil {
		id = newIdentity("", 0)
	}
	st = internalmetrics.BrokerStats{
		Node: id.node, Cluster: id.cluster, ClusterID: id.clusterID,
		Version: rabbitmqVersion, PluginVersion: versionString(), GoVersion: runtime.Version(),
		Overview:    b.Overview(),
		Channels:    b.Channels(),
		Connections: b.ConnectionStats(),
		MemoryUsed:  b.MemoryUsed(), MemoryLimit: b.MemoryHighWatermark(),
		DiskFree: b.DiskFree(), DiskFreeLimit: b.DiskFreeLimit(),
		MemoryAlarm: b.MemoryAlarm(), DiskAlarm: b.DiskAlarm(),
		Uptime:     time.Since(processStart).Seconds(),
		Goroutines: uint64(runtime.NumGoroutine()),
	}
	for _, vh := range b.VHosts() {
		st.Queues = append(st.Queues, b.Queues(vh)...)
	}
	if st.DiskFree == 0 && id.dataDir != "" {
		// A broker without a message store (no etcd) watches no disk;
		// the dashboards still want the data directory's free space.
		var fs syscall.Statfs_t
		if err := syscall.Statfs(id.dataDir, &fs); err == nil {
			st.DiskFree = fs.Bavail * uint64(fs.Bsize)
		}
	}
	st.OpenFDs, st.MaxFDs = fds()
	st.MaxSockets = st.MaxFDs
	if id.maxConns > 0 {
		st.MaxSockets = uint64(id.maxConns)
	}
	samples := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/gc/heap/frees:bytes"}}
	metrics.Read(samples)
	if samples[0].Value.Kind() == metrics.KindUint64 {
		st.GCRuns = samples[0].Value.Uint64()
	}
	if samples[1].Value.Kind() == metrics.KindUint64 {
		st.GCFreedBytes = samples[1].Value.Uint64()
	}
	return st, true
}

// fds are the process's open file descriptors and their limit
// (RLIMIT_NOFILE's soft limit).
func fds() (open, limit uint64) {
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		open = uint64(len(ents))
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil {
		limit = rl.Cur
	}
	return open, limit
}
