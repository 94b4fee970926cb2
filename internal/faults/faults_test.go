package faults

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

func TestRecoverCountsLogsAndCleansUp(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	before := Count("test-svc")
	var got any
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer Recover(log, "test-svc", "1.2.3.4:5", func(v any) { got = v })
		panic("boom")
	}()
	wg.Wait()
	if got != "boom" {
		t.Fatalf("cleanup got %v", got)
	}
	if Count("test-svc") != before+1 {
		t.Fatalf("count %d, want %d", Count("test-svc"), before+1)
	}
	line := buf.String()
	for _, want := range []string{"level=ERROR", "1.2.3.4:5", "boom", "faults_test.go"} {
		if !strings.Contains(line, want) {
			t.Errorf("log line lacks %q: %s", want, line)
		}
	}
	if Panics()["test-svc"] != before+1 {
		t.Errorf("Panics() = %v", Panics())
	}
}

func TestRecoverWithoutPanicDoesNothing(t *testing.T) {
	called := false
	func() {
		defer Recover(nil, "quiet", "", func(any) { called = true })
	}()
	if called || Count("quiet") != 0 {
		t.Fatal("cleanup ran without a panic")
	}
}

func TestCleanupPanicIsContained(t *testing.T) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer Recover(nil, "twice", "", func(any) { panic("again") })
		panic("first")
	}()
	<-done
	if Count("twice") != 1 {
		t.Fatal("not counted")
	}
}

func TestPointArmDisarm(t *testing.T) {
	Point("site.a", "anything") // unarmed: no panic
	disarm := Arm("site.a", "PANIC")
	Point("site.a", "harmless")
	Point("site.b", "PANIC-here")
	func() {
		defer func() {
			v := recover()
			if inj, ok := v.(Injected); !ok || inj.Site != "site.a" {
				t.Fatalf("recovered %v", v)
			}
		}()
		Point("site.a", "key-PANIC-1")
		t.Fatal("no panic")
	}()
	disarm()
	Point("site.a", "key-PANIC-1")
	if Armed() != nil {
		t.Fatalf("still armed: %v", Armed())
	}
}

func TestArmSpec(t *testing.T) {
	if err := ArmSpec("x.one=M1, x.two=M2"); err != nil {
		t.Fatal(err)
	}
	defer Arm("x.one", "z")()
	defer Arm("x.two", "z")()
	if got := Armed(); len(got) != 2 {
		t.Fatalf("armed %v", got)
	}
	if err := ArmSpec("nomarker"); err == nil {
		t.Fatal("bad spec accepted")
	}
}
