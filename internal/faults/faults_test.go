package faults

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
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

func TestLogBudgetPerService(t *testing.T) {
	var l = logBudget{by: map[string]*budget{}}
	now := time.Unix(1000, 0)
	for i := 0; i < logBurst; i++ {
		if ok, _ := l.allow("a", now); !ok {
			t.Fatalf("line %d refused", i)
		}
	}
	for i := 0; i < 3; i++ {
		if ok, _ := l.allow("a", now); ok {
			t.Fatal("over budget allowed")
		}
	}
	if ok, _ := l.allow("b", now); !ok {
		t.Fatal("another service shares the budget")
	}
	ok, suppressed := l.allow("a", now.Add(logWindow))
	if !ok || suppressed != 3 {
		t.Fatalf("next window: ok=%v suppressed=%d, want true 3", ok, suppressed)
	}
}

func TestFloodOfPanicsLogsBoundedLines(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	for i := 0; i < 50; i++ {
		func() {
			defer Recover(log, "flood", "peer", nil)
			panic("again")
		}()
	}
	if Count("flood") != 50 {
		t.Fatalf("counted %d", Count("flood"))
	}
	if n := strings.Count(buf.String(), "panic recovered"); n != logBurst {
		t.Fatalf("%d lines logged, want %d", n, logBurst)
	}
}
