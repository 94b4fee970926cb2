package memcachedcli

import (
	_ "embed"
)

// usageText is `memcached -h` of Debian's memcached 1.6.18 with default
// settings, byte for byte (memcached's test harness greps it to probe
// features such as "unix-socket").
//
//go:embed usage.txt
var usageText string

// licenseText is `memcached -i` of Debian's memcached 1.6.18.
//
//go:embed license.txt
var licenseText string

// Usage returns the text memcached 1.6.18 prints for -h (on stdout, exit
// 0), including its first line "memcached 1.6.18". memcached fills some
// defaults from options given before -h; Usage always shows the defaults.
func Usage() string { return usageText }

// License returns the text memcached 1.6.18 prints for -i (stdout, exit 0).
func License() string { return licenseText }
