package broker

import (
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// TestCleanCloseIsClean: after close-ok to the client's connection.close
// the server leaves closing the socket to the client, as RabbitMQ does,
// so amqp091-go reports no error for a clean close (it reported 501
// "EOF" for most closes when the server closed first).
func TestCleanCloseIsClean(t *testing.T) {
	forTargets(t, func(t *testing.T, url string) {
		for i := range 30 {
			c := dial(t, url)
			if i%2 == 0 {
				channel091(t, c)
			}
			closed := c.NotifyClose(make(chan *amqp091.Error, 1))
			if err := c.Close(); err != nil {
				t.Fatalf("close %d: %v", i, err)
			}
			select {
			case err, ok := <-closed: // closed without a value: a clean close
				if ok && err != nil {
					t.Fatalf("close %d reported %v", i, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("close %d: no close notification", i)
			}
		}
	})
}
