package kvstore

import (
	"log/slog"
	"maps"
	"os"
	"sort"
	"strings"
	"testing"

	"substrate/internal/logging"
)

// FuzzEnvFile: any etcd.conf either fails to parse with an error naming
// the file and line, or gives variables that survive a round trip
// (written back as export KEY="value" and parsed again), and that etcd's
// own flag table then accepts or refuses with an error, never a panic.
// buildEmbed validates only: it neither binds nor connects.
func FuzzEnvFile(f *testing.F) {
	if b, err := os.ReadFile("testdata/etcd.conf"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("# c\n\nexport ETCD_NAME='a b'\nETCD_DATA_DIR=/x # not a comment\n #[Member]\nETCD_X=\"\"\n"))
	f.Add([]byte("ETCD_LISTEN_CLIENT_URLS=\"https://127.0.0.1:2379,http://[::1]:2379\"\nETCD_CLIENT_CERT_AUTH=true\nETCD_AUTO_TLS=1\n"))
	f.Add([]byte("ETCD_INITIAL_CLUSTER=\"a=http://127.0.0.1:2380,b=http://127.0.0.1:2381\"\nETCD_INITIAL_CLUSTER_STATE=existing\nETCD_VERSION=3\n"))
	f.Add([]byte("ETCD_QUOTA_BACKEND_BYTES=-1\nETCD_HEARTBEAT_INTERVAL=0\nETCD_ELECTION_TIMEOUT=99999999999\nETCD_LOG_LEVEL=debug\n"))
	f.Add([]byte("ETCD_CORS=\"*\"\nETCD_MAX_CONCURRENT_STREAMS=x\nETCD_CIPHER_SUITES=TLS_FOO\nETCD_ENABLE_PPROF=true\n"))
	f.Add([]byte("A=\"unterminated\nB='x\"\n=1\nexport\n"))
	f.Add([]byte("ETCD_NAME=a\r\nETCD_NAME=b\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		vars, err := parseEnvFile("etcd.conf", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "etcd.conf:") && !strings.Contains(err.Error(), "token too long") {
				t.Fatalf("error without file and line: %v", err)
			}
			return
		}
		var b strings.Builder
		keys := make([]string, 0, len(vars))
		for k := range vars {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			b.WriteString("export " + k + "=\"" + vars[k] + "\"\n")
		}
		again, err := parseEnvFile("again", []byte(b.String()))
		if err != nil || !maps.Equal(vars, again) {
			t.Fatalf("round trip of %q:\n%q\n%v %q", data, b.String(), err, again)
		}
		cfg := NewConfig()
		cfg.DataDir = t.TempDir()
		cfg.Vars = vars
		log := slog.New(slog.DiscardHandler)
		_, _ = buildEmbed(cfg, log, logging.NewQuieter(harmlessWarnings...))
	})
}
