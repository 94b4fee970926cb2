package benchkit

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// CPUTime returns the user+system CPU time pid has used (0 if it cannot
// be read), from /proc/PID/stat in clock ticks of 1/100 s (Linux's
// USER_HZ).
func CPUTime(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // after the command name
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// LoadAvg returns the host's 1-minute load average, the figure `uptime`
// prints first (-1 if /proc/loadavg cannot be read).
func LoadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}
