package memcachedcli

import (
	"math"
	"strconv"
)

// This file reproduces the C library number conversions memcached 1.6.18
// uses on its command line (glibc on LP64: long is 64 bits, int is 32 bits),
// because a drop-in must accept exactly the same sloppy input: "-c 10x" is
// 10 connections, "-m x" is 0 megabytes, "-I 1.5m" is one megabyte.

// cIsSpace reports whether b is whitespace for isspace(3) in the C locale.
func cIsSpace(b byte) bool {
	return b == ' ' || (b >= '\t' && b <= '\r')
}

// cStrtol mimics strtol(s, &end, base) for base 8 or 10. It returns the
// value (clamped to the int64 range on overflow, as glibc does), the index
// of the first unconverted byte (0 when no digits were found, like end == s),
// and whether the value overflowed (errno == ERANGE).
func cStrtol(s string, base int) (v int64, end int, overflow bool) {
	i := 0
	for i < len(s) && cIsSpace(s[i]) {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	start := i
	var acc uint64 // magnitude; saturates past 1<<63
	for i < len(s) {
		d := int(s[i]) - '0'
		if d < 0 || d >= base {
			break
		}
		if !overflow {
			if acc > (math.MaxUint64-uint64(d))/uint64(base) {
				overflow = true
			} else {
				acc = acc*uint64(base) + uint64(d)
			}
		}
		i++
	}
	if i == start {
		return 0, 0, false
	}
	switch {
	case neg && (overflow || acc > 1<<63):
		return math.MinInt64, i, true
	case neg:
		return int64(-acc), i, false // acc == 1<<63 wraps to MinInt64, as wanted
	case overflow || acc > math.MaxInt64:
		return math.MaxInt64, i, true
	}
	return int64(acc), i, false
}

// cStrtoul mimics strtoul(s, &end, 10): a leading '-' negates the result
// modulo 2^64, and overflow clamps to ULONG_MAX with ERANGE.
func cStrtoul(s string) (v uint64, end int, overflow bool) {
	i := 0
	for i < len(s) && cIsSpace(s[i]) {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	start := i
	var acc uint64
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		d := uint64(s[i] - '0')
		if !overflow {
			if acc > (math.MaxUint64-d)/10 {
				overflow = true
			} else {
				acc = acc*10 + d
			}
		}
		i++
	}
	if i == start {
		return 0, 0, false
	}
	if overflow {
		return math.MaxUint64, i, true
	}
	if neg {
		acc = -acc
	}
	return acc, i, false
}

// atoi mimics glibc atoi(3): (int)strtol(s, NULL, 10), i.e. the long result
// truncated to 32 bits.
func atoi(s string) int {
	v, _, _ := cStrtol(s, 10)
	return int(int32(v))
}

// octal mimics (int)strtol(s, NULL, 8), used for -a.
func octal(s string) int {
	v, _, _ := cStrtol(s, 8)
	return int(int32(v))
}

// safeStrtol mimics memcached's util.c safe_strtol: base 10, at least one
// digit, no ERANGE, and the number must be followed by whitespace or the end
// of the string. The result is truncated to int32 like its int32_t output.
func safeStrtol(s string) (int, bool) {
	v, end, overflow := cStrtol(s, 10)
	if overflow || end == 0 {
		return 0, false
	}
	if end < len(s) && !cIsSpace(s[end]) {
		return 0, false
	}
	return int(int32(v)), true
}

// safeStrtoul mimics memcached's util.c safe_strtoul (uint32_t output):
// like safeStrtol, and a value that is negative as a signed long is refused
// when the string contains a '-' (so "-1" fails).
func safeStrtoul(s string) (uint32, bool) {
	v, end, overflow := cStrtoul(s)
	if overflow || end == 0 {
		return 0, false
	}
	if end < len(s) && !cIsSpace(s[end]) {
		return 0, false
	}
	if int64(v) < 0 {
		for i := 0; i < len(s); i++ {
			if s[i] == '-' {
				return 0, false
			}
		}
	}
	return uint32(v), true
}

// floatPrefix returns the length of the longest prefix of s (after leading
// whitespace) that strtod(3) would convert, for decimal notation and the
// special words inf, infinity and nan. Hexadecimal floats ("0x1p4") are not
// recognised: only their leading "0" is, which no memcached user relies on.
func floatPrefix(s string) (start, end int) {
	i := 0
	for i < len(s) && cIsSpace(s[i]) {
		i++
	}
	start = i
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	lower := func(j int) byte {
		if j < len(s) && s[j] >= 'A' && s[j] <= 'Z' {
			return s[j] + 'a' - 'A'
		}
		if j < len(s) {
			return s[j]
		}
		return 0
	}
	word := func(w string) bool {
		for k := 0; k < len(w); k++ {
			if lower(i+k) != w[k] {
				return false
			}
		}
		return true
	}
	switch {
	case word("infinity"):
		return start, i + 8
	case word("inf"):
		return start, i + 3
	case word("nan"):
		return start, i + 3
	}
	digits := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
		digits++
	}
	if i < len(s) && s[i] == '.' {
		i++
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
			digits++
		}
	}
	if digits == 0 {
		return start, start
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		j := i + 1
		if j < len(s) && (s[j] == '+' || s[j] == '-') {
			j++
		}
		k := j
		for k < len(s) && s[k] >= '0' && s[k] <= '9' {
			k++
		}
		if k > j {
			i = k
		}
	}
	return start, i
}

// cStrtod mimics strtod(s, &end). ok is false when nothing was converted;
// overflow reports ERANGE for results too large for a double.
func cStrtod(s string) (v float64, end int, ok, overflow bool) {
	start, e := floatPrefix(s)
	if e == start {
		return 0, 0, false, false
	}
	f, err := strconv.ParseFloat(s[start:e], 64)
	if err != nil {
		// ParseFloat reports range errors with ±Inf, like strtod's HUGE_VAL.
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return f, e, true, true
		}
		return 0, 0, false, false
	}
	return f, e, true, false
}

// atof mimics atof(3): strtod(s, NULL) with no error reporting.
func atof(s string) float64 {
	v, _, _, _ := cStrtod(s)
	return v
}

// safeStrtod mimics memcached's util.c safe_strtod.
func safeStrtod(s string) (float64, bool) {
	v, end, ok, overflow := cStrtod(s)
	if !ok || overflow {
		return 0, false
	}
	if end < len(s) && !cIsSpace(s[end]) {
		return 0, false
	}
	return v, true
}
