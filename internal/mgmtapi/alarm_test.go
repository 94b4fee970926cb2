package mgmtapi

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"substrate/broker"
)

const alarmGoldenFile = "testdata/rabbitmq-3.10.8-disk-alarm.json"

// alarmSteps are the health checks that answer differently while an
// alarm is on.
var alarmSteps = []string{"/health/checks/alarms", "/health/checks/local-alarms"}

// alarmAnswers asks tg's health checks once its disk alarm is on; the
// node name is replaced by "NODE".
func alarmAnswers(t *testing.T, tg *target) map[string]golden {
	t.Helper()
	node := tg.get(t, "/overview").(map[string]any)["node"].(string)
	deadline := time.Now().Add(60 * time.Second)
	for tg.do(t, "GET", alarmSteps[0], nil, tg.admin[:]...).Status != 503 {
		if time.Now().After(deadline) {
			t.Fatalf("%s: no disk alarm after 60 s", tg.name)
		}
		time.Sleep(100 * time.Millisecond)
	}
	out := map[string]golden{}
	for _, p := range alarmSteps {
		rp := tg.do(t, "GET", p, nil, tg.admin[:]...)
		b, _ := json.Marshal(rp.Body)
		var v any
		json.Unmarshal([]byte(replaceAll(string(b), node, "NODE")), &v)
		out[p] = golden{Status: rp.Status, Exact: v}
	}
	return out
}

func replaceAll(s, old, new string) string { return strings.ReplaceAll(s, old, new) }

// TestAlarmChecks: with the disk alarm on, health/checks/alarms and
// local-alarms answer 503 with RabbitMQ 3.10.8's bodies (recorded with
// -update from a RabbitMQ whose disk_free_limit exceeds the disk).
func TestAlarmChecks(t *testing.T) {
	if *update {
		rmq := startRabbitMQ(t, "disk_free_limit.absolute = 1000000GB")
		got := alarmAnswers(t, rmq)
		b, _ := json.MarshalIndent(got, "", " ")
		if err := os.WriteFile(alarmGoldenFile, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	b, err := os.ReadFile(alarmGoldenFile)
	if err != nil {
		t.Fatalf("%v (record with go test -run TestAlarmChecks -update)", err)
	}
	var want map[string]golden
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	sub := startSubstrate(t, time.Hour, func(c *broker.Config) { c.DiskFreeLimit = 1 << 62 })
	got := alarmAnswers(t, sub)
	for _, p := range alarmSteps {
		if want[p].Status != got[p].Status || !reflect.DeepEqual(normalize(want[p].Exact), normalize(got[p].Exact)) {
			t.Errorf("%s: %d %s, RabbitMQ %d %s", p, got[p].Status, brief2(got[p].Exact), want[p].Status, brief2(want[p].Exact))
		}
	}
}
