package preflight

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHosts(t *testing.T) {
	got, err := Hosts(context.Background(), "127.0.0.1, ::1,[::1],127.0.0.1")
	if err != nil || strings.Join(got, ",") != "127.0.0.1,::1" {
		t.Fatalf("Hosts = %v, %v", got, err)
	}
	got, err = Hosts(context.Background(), "localhost")
	if err != nil || len(got) == 0 {
		t.Fatalf("localhost = %v, %v", got, err)
	}
	if _, err := Hosts(context.Background(), "no!such!host"); err == nil || !strings.Contains(err.Error(), "no!such!host") {
		t.Fatalf("bad name: %v", err)
	}
	if _, err := Hosts(context.Background(), " , "); err == nil {
		t.Fatal("empty list: no error")
	}
	if a := Addrs([]string{"127.0.0.1", "::1"}, 5672); strings.Join(a, ",") != "127.0.0.1:5672,[::1]:5672" {
		t.Fatalf("Addrs = %v", a)
	}
}

func TestPortsNamesTheBusyOne(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = Ports([]Port{{"amqp port", "127.0.0.1:0"}, {"etcd client port", l.Addr().String()}})
	if err == nil || !strings.HasPrefix(err.Error(), "etcd client port: ") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("err = %v", err)
	}
}

func TestWritableDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	if err := WritableDir(dir); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("probe file left behind: %v", entries)
	}
	// A path below a regular file cannot be created, even by root.
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	err := WritableDir(filepath.Join(file, "data"))
	if err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("err = %v", err)
	}
	if os.Geteuid() != 0 {
		ro := t.TempDir()
		os.Chmod(ro, 0o500)
		defer os.Chmod(ro, 0o700)
		if err := WritableDir(ro); err == nil || !strings.Contains(err.Error(), "not writable") {
			t.Fatalf("read-only dir: %v", err)
		}
	}
}
