package benchkit

import (
	"fmt"
	"sync"
	"sync/atomic"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Drain is a load's draining consumer: basic.qos Prefetch, manual acks
// with multiple=true every AckEvery deliveries, each body checked to be
// BodySize bytes.
type Drain struct {
	Prefetch, AckEvery, BodySize int
}

// Start opens a channel on c and consumes queue, counting deliveries in
// consumed until the channel closes (then wg is done). Failures go to e;
// ack failures only while closing is false.
func (d Drain) Start(c *amqp.Connection, queue string, consumed *atomic.Int64, closing *atomic.Bool, e *Errs, wg *sync.WaitGroup) error {
	ch, err := c.Channel()
	if err != nil {
		return err
	}
	if err := ch.Qos(d.Prefetch, 0, false); err != nil {
		return fmt.Errorf("basic.qos: %w", err)
	}
	dels, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("basic.consume: %w", err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		k := 0
		for m := range dels {
			if len(m.Body) != d.BodySize {
				e.Add("bad body", fmt.Errorf("%d bytes", len(m.Body)))
			}
			consumed.Add(1)
			if k++; k%d.AckEvery == 0 {
				if err := m.Ack(true); err != nil && !closing.Load() {
					e.Add("ack", err)
				}
			}
		}
	}()
	return nil
}
