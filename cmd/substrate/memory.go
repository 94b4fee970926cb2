package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// parseWatermark reads --amqp-memory-high-watermark as RabbitMQ reads
// vm_memory_high_watermark: a fraction of the machine's memory (0.4, the
// default) or an absolute amount ("512MiB", "2GB", "1073741824"). 0 turns
// the memory alarm off. total is the memory the fraction applies to.
func parseWatermark(s string, total uint64) (uint64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty value")
	}
	bad := fmt.Errorf("%q is neither a fraction of memory in [0, 1] nor an amount such as 512MiB", s)
	if strings.Contains(s, ".") {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f < 0 || f > 1 {
			return 0, bad
		}
		return uint64(f * float64(total)), nil
	}
	return parseAmount(s, bad)
}

// parseDiskFreeLimit reads --amqp-disk-free-limit as RabbitMQ reads
// disk_free_limit: an amount ("50MB", the default; "1GB"; bytes), or a
// number with a decimal point, which is a multiple of the machine's
// memory as RabbitMQ's disk_free_limit.relative ({mem_relative, 1.5}).
// 0 turns the disk alarm off.
func parseDiskFreeLimit(s string, total uint64) (uint64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty value")
	}
	bad := fmt.Errorf("%q is neither an amount such as 50MB nor a multiple of memory such as 1.0", s)
	if strings.Contains(s, ".") {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f < 0 || f > 1000 {
			return 0, bad
		}
		return uint64(f * float64(total)), nil
	}
	return parseAmount(s, bad)
}

// parseAmount reads a byte amount with an optional unit (RabbitMQ's
// spellings: KiB MiB GiB, KB MB GB, k/K M G as binary units).
func parseAmount(s string, bad error) (uint64, error) {
	units := []struct {
		suffix string
		mult   uint64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
		{"kB", 1e3}, {"k", 1 << 10}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}}
	mult := uint64(1)
	num := s
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil || n > (1<<62)/mult {
		return 0, bad
	}
	return n * mult, nil
}

// totalMemory is the memory available to this process: the machine's,
// or its cgroup's limit if lower. 0 if neither can be read.
func totalMemory() uint64 {
	var total uint64
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				total = kb << 10
				break
			}
		}
		f.Close()
	}
	for _, p := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if lim, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && lim > 0 && (total == 0 || lim < total) {
			total = lim
		}
		break
	}
	return total
}
