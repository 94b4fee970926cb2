package metrics

import (
	"errors"
	"sort"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// StatsSource is what the memcached collector reads: the STAT lines of
// "stats", "stats settings", "stats items" and "stats slabs" as name to
// value (cache.Server.StatsGroup).
type StatsSource interface {
	StatsGroup(group string) (map[string]string, error)
}

// Memcached exports a cache under prometheus/memcached_exporter's names,
// help texts, types and labels (pkg/exporter/exporter.go, v0.16.0), from
// the same stats the exporter would read over the wire, so that its
// dashboards and alerts work unchanged. Source returns the cache to read,
// or nil while there is none (then memcached_up is 0 and nothing else is
// exported, as the exporter does when it cannot connect).
type Memcached struct {
	Source func() StatsSource
}

const mcNS = "memcached"

func mcDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(mcNS+"_"+name, help, labels, nil)
}

var (
	mcUp       = mcDesc("up", "Could the memcached server be reached.")
	mcVersion  = mcDesc("version", "The version of this memcached server.", "version")
	mcCommands = mcDesc("commands_total", "Total number of all requests broken down by command (get, set, etc.) and status.", "command", "status")
	mcMaxConns = mcDesc("max_connections", "Maximum number of clients allowed.")
	mcSlabCmds = mcDesc("slab_commands_total", "Total number of all requests broken down by command (get, set, etc.) and status per slab.", "slab", "command", "status")
	mcLRUHits  = mcDesc("slab_lru_hits_total", "Number of get_hits to the LRU.", "slab", "lru")
)

// mcStat is one metric read from one STAT key of plain "stats".
type mcStat struct {
	key  string
	desc *prometheus.Desc
	typ  prometheus.ValueType
	conv func(string) (float64, error) // nil: a number
}

var mcGeneral = []mcStat{
	{"uptime", mcDesc("uptime_seconds", "Number of seconds since the server started."), prometheus.CounterValue, nil},
	{"time", mcDesc("time_seconds", "current UNIX time according to the server."), prometheus.GaugeValue, nil},
	{"rusage_user", mcDesc("process_user_cpu_seconds_total", "Accumulated user time for this process."), prometheus.CounterValue, parseTimeval},
	{"rusage_system", mcDesc("process_system_cpu_seconds_total", "Accumulated system time for this process."), prometheus.CounterValue, parseTimeval},
	{"bytes", mcDesc("current_bytes", "Current number of bytes used to store items."), prometheus.GaugeValue, nil},
	{"limit_maxbytes", mcDesc("limit_bytes", "Number of bytes this server is allowed to use for storage."), prometheus.GaugeValue, nil},
	{"curr_items", mcDesc("current_items", "Current number of items stored by this instance."), prometheus.GaugeValue, nil},
	{"total_items", mcDesc("items_total", "Total number of items stored during the life of this instance."), prometheus.CounterValue, nil},
	{"bytes_read", mcDesc("read_bytes_total", "Total number of bytes read by this server from network."), prometheus.CounterValue, nil},
	{"bytes_written", mcDesc("written_bytes_total", "Total number of bytes sent by this server to network."), prometheus.CounterValue, nil},
	{"curr_connections", mcDesc("current_connections", "Current number of open connections."), prometheus.GaugeValue, nil},
	{"total_connections", mcDesc("connections_total", "Total number of connections opened since the server started running."), prometheus.CounterValue, nil},
	{"rejected_connections", mcDesc("connections_rejected_total", "Total number of connections rejected due to hitting the memcached's -c limit in maxconns_fast mode."), prometheus.CounterValue, nil},
	{"conn_yields", mcDesc("connections_yielded_total", "Total number of connections yielded running due to hitting the memcached's -R limit."), prometheus.CounterValue, nil},
	{"listen_disabled_num", mcDesc("connections_listener_disabled_total", "Number of times that memcached has hit its connections limit and disabled its listener."), prometheus.CounterValue, nil},
	{"evictions", mcDesc("items_evicted_total", "Total number of valid items removed from cache to free memory for new items."), prometheus.CounterValue, nil},
	{"reclaimed", mcDesc("items_reclaimed_total", "Total number of times an entry was stored using memory from an expired entry."), prometheus.CounterValue, nil},
	{"store_too_large", mcDesc("item_too_large_total", "The number of times an item exceeded the max-item-size when being stored."), prometheus.CounterValue, nil},
	{"store_no_memory", mcDesc("item_no_memory_total", "The number of times an item could not be stored due to no more memory."), prometheus.CounterValue, nil},
	{"lru_crawler_starts", mcDesc("lru_crawler_starts_total", "Times an LRU crawler was started."), prometheus.CounterValue, nil},
	{"direct_reclaims", mcDesc("direct_reclaims_total", "Times worker threads had to directly reclaim or evict items."), prometheus.CounterValue, nil},
	{"crawler_items_checked", mcDesc("lru_crawler_items_checked_total", "Total items examined by LRU Crawler."), prometheus.CounterValue, nil},
	{"crawler_reclaimed", mcDesc("lru_crawler_reclaimed_total", "Total items freed by LRU Crawler."), prometheus.CounterValue, nil},
	{"moves_to_cold", mcDesc("lru_crawler_moves_to_cold_total", "Total number of items moved from HOT/WARM to COLD LRU's."), prometheus.CounterValue, nil},
	{"moves_to_warm", mcDesc("lru_crawler_moves_to_warm_total", "Total number of items moved from COLD to WARM LRU."), prometheus.CounterValue, nil},
	{"moves_within_lru", mcDesc("lru_crawler_moves_within_lru_total", "Total number of items reshuffled within HOT or WARM LRU's."), prometheus.CounterValue, nil},
	{"total_malloced", mcDesc("malloced_bytes", "Number of bytes of memory allocated to slab pages."), prometheus.GaugeValue, nil},
	{"accepting_conns", mcDesc("accepting_connections", "The Memcached server is currently accepting new connections."), prometheus.GaugeValue, nil},
}

// mcSettings are read from "stats settings" when lru_crawler is "yes".
var mcSettings = []mcStat{
	{"lru_crawler", mcDesc("lru_crawler_enabled", "Whether the LRU crawler is enabled."), prometheus.GaugeValue, parseYesNo},
	{"lru_crawler_sleep", mcDesc("lru_crawler_sleep", "Microseconds to sleep between LRU crawls."), prometheus.GaugeValue, nil},
	{"lru_crawler_tocrawl", mcDesc("lru_crawler_to_crawl", "Max items to crawl per slab per run."), prometheus.GaugeValue, nil},
	{"lru_maintainer_thread", mcDesc("lru_crawler_maintainer_thread", "Split LRU mode and background threads."), prometheus.GaugeValue, parseYesNo},
	{"hot_lru_pct", mcDesc("lru_crawler_hot_percent", "Percent of slab memory reserved for HOT LRU."), prometheus.GaugeValue, nil},
	{"warm_lru_pct", mcDesc("lru_crawler_warm_percent", "Percent of slab memory reserved for WARM LRU."), prometheus.GaugeValue, nil},
	{"hot_max_factor", mcDesc("lru_crawler_hot_max_factor", "Set idle age of HOT LRU to COLD age * this"), prometheus.GaugeValue, nil},
	{"warm_max_factor", mcDesc("lru_crawler_warm_max_factor", "Set idle age of WARM LRU to COLD age * this"), prometheus.GaugeValue, nil},
}

// mcItems are per slab class, from "stats items" (items:CLASS:KEY); the
// exporter skips keys a server does not print.
var mcItems = []mcStat{
	{"number", mcDesc("slab_current_items", "Number of items currently stored in this slab class.", "slab"), prometheus.GaugeValue, nil},
	{"age", mcDesc("slab_items_age_seconds", "Number of seconds the oldest item has been in the slab class.", "slab"), prometheus.GaugeValue, nil},
	{"crawler_reclaimed", mcDesc("slab_items_crawler_reclaimed_total", "Number of items freed by the LRU Crawler.", "slab"), prometheus.CounterValue, nil},
	{"evicted", mcDesc("slab_items_evicted_total", "Total number of times an item had to be evicted from the LRU before it expired.", "slab"), prometheus.CounterValue, nil},
	{"evicted_nonzero", mcDesc("slab_items_evicted_nonzero_total", "Total number of times an item which had an explicit expire time set had to be evicted from the LRU before it expired.", "slab"), prometheus.CounterValue, nil},
	{"evicted_time", mcDesc("slab_items_evicted_time_seconds", "Seconds since the last access for the most recent item evicted from this class.", "slab"), prometheus.CounterValue, nil},
	{"evicted_unfetched", mcDesc("slab_items_evicted_unfetched_total", "Total nmber of items evicted and never fetched.", "slab"), prometheus.CounterValue, nil},
	{"expired_unfetched", mcDesc("slab_items_expired_unfetched_total", "Total number of valid items evicted from the LRU which were never touched after being set.", "slab"), prometheus.CounterValue, nil},
	{"outofmemory", mcDesc("slab_items_outofmemory_total", "Total number of items for this slab class that have triggered an out of memory error.", "slab"), prometheus.CounterValue, nil},
	{"reclaimed", mcDesc("slab_items_reclaimed_total", "Total number of items reclaimed.", "slab"), prometheus.CounterValue, nil},
	{"tailrepairs", mcDesc("slab_items_tailrepairs_total", "Total number of times the entries for a particular ID need repairing.", "slab"), prometheus.CounterValue, nil},
	{"moves_to_cold", mcDesc("slab_items_moves_to_cold", "Number of items moved from HOT or WARM into COLD.", "slab"), prometheus.CounterValue, nil},
	{"moves_to_warm", mcDesc("slab_items_moves_to_warm", "Number of items moves from COLD into WARM.", "slab"), prometheus.CounterValue, nil},
	{"moves_within_lru", mcDesc("slab_items_moves_within_lru", "Number of times active items were bumped within HOT or WARM.", "slab"), prometheus.CounterValue, nil},
	{"number_hot", mcDesc("slab_hot_items", "Number of items presently stored in the HOT LRU.", "slab"), prometheus.GaugeValue, nil},
	{"number_warm", mcDesc("slab_warm_items", "Number of items presently stored in the WARM LRU.", "slab"), prometheus.GaugeValue, nil},
	{"number_cold", mcDesc("slab_cold_items", "Number of items presently stored in the COLD LRU.", "slab"), prometheus.GaugeValue, nil},
	{"number_temp", mcDesc("slab_temporary_items", "Number of items presently stored in the TEMPORARY LRU.", "slab"), prometheus.GaugeValue, nil},
	{"age_hot", mcDesc("slab_hot_age_seconds", "Age of the oldest item in HOT LRU.", "slab"), prometheus.GaugeValue, nil},
	{"age_warm", mcDesc("slab_warm_age_seconds", "Age of the oldest item in HOT LRU.", "slab"), prometheus.GaugeValue, nil},
}

var mcSlabMemRequested = mcDesc("slab_mem_requested_bytes", "Number of bytes of memory actual items take up within a slab.", "slab")

// mcSlabs are per slab class, from "stats slabs" (CLASS:KEY).
var mcSlabs = []mcStat{
	{"chunk_size", mcDesc("slab_chunk_size_bytes", "Number of bytes allocated to each chunk within this slab class.", "slab"), prometheus.GaugeValue, nil},
	{"chunks_per_page", mcDesc("slab_chunks_per_page", "Number of chunks within a single page for this slab class.", "slab"), prometheus.GaugeValue, nil},
	{"total_pages", mcDesc("slab_current_pages", "Number of pages allocated to this slab class.", "slab"), prometheus.GaugeValue, nil},
	{"total_chunks", mcDesc("slab_current_chunks", "Number of chunks allocated to this slab class.", "slab"), prometheus.GaugeValue, nil},
	{"used_chunks", mcDesc("slab_chunks_used", "Number of chunks allocated to an item.", "slab"), prometheus.GaugeValue, nil},
	{"free_chunks", mcDesc("slab_chunks_free", "Number of chunks not yet allocated items.", "slab"), prometheus.GaugeValue, nil},
	{"free_chunks_end", mcDesc("slab_chunks_free_end", "Number of free chunks at the end of the last allocated page.", "slab"), prometheus.GaugeValue, nil},
	{"mem_requested", mcSlabMemRequested, prometheus.GaugeValue, nil},
}

// Describe sends nothing: the collector is unchecked, as its series
// depend on the stats a server prints (slab classes come and go).
func (Memcached) Describe(chan<- *prometheus.Desc) {}

// Collect reads the four stats groups and sends the exporter's metrics.
func (m Memcached) Collect(ch chan<- prometheus.Metric) {
	var src StatsSource
	if m.Source != nil {
		src = m.Source()
	}
	if src == nil {
		ch <- prometheus.MustNewConstMetric(mcUp, prometheus.GaugeValue, 0)
		return
	}
	groups := map[string]map[string]string{}
	up := 1.0
	for _, g := range []string{"", "settings", "items", "slabs"} {
		st, err := src.StatsGroup(g)
		if err != nil {
			up = 0
			st = map[string]string{}
		}
		groups[g] = st
	}
	if err := collectMemcached(ch, groups[""], groups["settings"], groups["items"], groups["slabs"]); err != nil {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(mcUp, prometheus.GaugeValue, up)
}

var errNoKey = errors.New("key not found")

// collectMemcached maps the stats as memcached_exporter's parseStats and
// parseStatsSettings do; a key the server does not print is skipped, a
// value that does not parse makes memcached_up 0.
func collectMemcached(ch chan<- prometheus.Metric, s, settings, items, slabs map[string]string) error {
	var firstErr error
	emit := func(stats map[string]string, st mcStat, labels ...string) {
		v, err := statValue(stats, st.key, st.conv)
		if errors.Is(err, errNoKey) {
			return
		}
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			return
		}
		ch <- prometheus.MustNewConstMetric(st.desc, st.typ, v, labels...)
	}
	if v, ok := s["version"]; ok {
		ch <- prometheus.MustNewConstMetric(mcVersion, prometheus.GaugeValue, 1, v)
	}
	for _, op := range []string{"get", "delete", "incr", "decr", "cas", "touch"} {
		emit(s, mcStat{op + "_hits", mcCommands, prometheus.CounterValue, nil}, op, "hit")
		emit(s, mcStat{op + "_misses", mcCommands, prometheus.CounterValue, nil}, op, "miss")
	}
	emit(s, mcStat{"cas_badval", mcCommands, prometheus.CounterValue, nil}, "cas", "badval")
	emit(s, mcStat{"cmd_flush", mcCommands, prometheus.CounterValue, nil}, "flush", "hit")
	// memcached counts cas commands in cmd_set too.
	if set, err := statValue(s, "cmd_set", nil); err == nil {
		if cas, err := statSum(s, "cas_misses", "cas_hits", "cas_badval"); err == nil {
			ch <- prometheus.MustNewConstMetric(mcCommands, prometheus.CounterValue, set-cas, "set", "hit")
		}
	}
	for _, st := range mcGeneral {
		emit(s, st)
	}
	emit(settings, mcStat{"maxconns", mcMaxConns, prometheus.GaugeValue, nil})
	if settings["lru_crawler"] == "yes" {
		for _, st := range mcSettings {
			emit(settings, st)
		}
	}

	for _, class := range classes(items, true) {
		u := perClass(items, "items:"+class+":")
		for _, st := range mcItems {
			emit(u, st, class)
		}
		for _, lru := range []string{"hot", "warm", "cold", "temp"} {
			name := lru
			if lru == "temp" {
				name = "temporary"
			}
			emit(u, mcStat{"hits_to_" + lru, mcLRUHits, prometheus.CounterValue, nil}, class, name)
		}
	}
	for _, class := range classes(slabs, false) {
		v := perClass(slabs, class+":")
		for _, op := range []string{"get", "delete", "incr", "decr", "cas", "touch"} {
			emit(v, mcStat{op + "_hits", mcSlabCmds, prometheus.CounterValue, nil}, class, op, "hit")
		}
		emit(v, mcStat{"cas_badval", mcSlabCmds, prometheus.CounterValue, nil}, class, "cas", "badval")
		if set, err := statValue(v, "cmd_set", nil); err == nil {
			if cas, err := statSum(v, "cas_hits", "cas_badval"); err == nil {
				ch <- prometheus.MustNewConstMetric(mcSlabCmds, prometheus.CounterValue, set-cas, class, "set", "hit")
			}
		}
		for _, st := range mcSlabs {
			emit(v, st, class)
		}
	}
	return firstErr
}

// classes are the slab class numbers in "stats items" (items:N:key) or
// "stats slabs" (N:key), in numeric order.
func classes(stats map[string]string, items bool) []string {
	seen := map[int]bool{}
	for k := range stats {
		if items {
			var ok bool
			if k, ok = strings.CutPrefix(k, "items:"); !ok {
				continue
			}
		}
		n, _, ok := strings.Cut(k, ":")
		if !ok {
			continue
		}
		if i, err := strconv.Atoi(n); err == nil {
			seen[i] = true
		}
	}
	out := make([]int, 0, len(seen))
	for i := range seen {
		out = append(out, i)
	}
	sort.Ints(out)
	s := make([]string, len(out))
	for i, n := range out {
		s[i] = strconv.Itoa(n)
	}
	return s
}

func perClass(stats map[string]string, prefix string) map[string]string {
	out := map[string]string{}
	for k, v := range stats {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			out[rest] = v
		}
	}
	return out
}

func statValue(stats map[string]string, key string, conv func(string) (float64, error)) (float64, error) {
	v, ok := stats[key]
	if !ok {
		return 0, errNoKey
	}
	if conv == nil {
		conv = func(s string) (float64, error) { return strconv.ParseFloat(s, 64) }
	}
	return conv(v)
}

func statSum(stats map[string]string, keys ...string) (float64, error) {
	var total float64
	for _, k := range keys {
		v, err := statValue(stats, k, nil)
		if err != nil {
			return 0, err
		}
		total += v
	}
	return total, nil
}

func parseYesNo(s string) (float64, error) {
	switch s {
	case "yes":
		return 1, nil
	case "no":
		return 0, nil
	}
	return 0, errors.New("not yes or no: " + s)
}

// parseTimeval reads rusage's "seconds.microseconds".
func parseTimeval(s string) (float64, error) {
	sec, usec, ok := strings.Cut(s, ".")
	if !ok {
		return 0, errors.New("not a timeval: " + s)
	}
	a, err := strconv.ParseFloat(sec, 64)
	if err != nil {
		return 0, err
	}
	b, err := strconv.ParseFloat(usec, 64)
	if err != nil {
		return 0, err
	}
	return a + b/1e6, nil
}
