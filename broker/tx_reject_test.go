package broker

import (
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// TestTxRejectedPublish: a queue that refuses a transaction's message
// (x-overflow reject-publish, full) fails the transaction as RabbitMQ's
// rabbit_channel:complete_tx does: no tx.commit-ok but 406 "partial tx
// completion" for tx.commit, closing the channel.
func TestTxRejectedPublish(t *testing.T) { forTargets(t, testTxRejectedPublish) }

func testTxRejectedPublish(t *testing.T, url string) {
	c := dial(t, url)
	setup := channel091(t, c)
	full := uniq("tx-full")
	if _, err := setup.QueueDeclare(full, false, false, false, false, amqp091.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dropQueues(t, url, full) })
	must(t, setup.Publish("", full, false, false, amqp091.Publishing{Body: []byte("first")}))
	eventually(t, 2*time.Second, func() bool {
		q, err := setup.QueueDeclarePassive(full, false, false, false, false, nil)
		return err == nil && q.Messages == 1
	}, "the queue full")

	ch := channel091(t, c)
	must(t, ch.Tx())
	must(t, ch.Publish("", full, false, false, amqp091.Publishing{Body: []byte("refused")}))
	wantAMQPError(t, ch.TxCommit(), 406, "PRECONDITION_FAILED - partial tx completion")
}
