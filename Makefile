# substrate: RabbitMQ, memcached and etcd for an OpenStack controller, in one Go binary.

GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.buildVersion=$(VERSION)

.PHONY: build run test unit integration lint bench clean

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/substrate ./cmd/substrate

# Starts every service with its defaults: loopback, data in ./substrate-data.
run: build
	./bin/substrate serve

# Unit and integration tests, race detector on. Integration tests drive
# bin/substrate with Debian's clients; a missing client skips its test
# unless SUBSTRATE_REQUIRE_CLIENTS=1 (as .ci/run sets).
test: build
	SUBSTRATE_BIN=$(CURDIR)/bin/substrate $(GO) test -race -count=1 -timeout 15m ./...

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /integration)

integration: build
	SUBSTRATE_BIN=$(CURDIR)/bin/substrate $(GO) test -count=1 -timeout 15m ./integration/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Ours against the real daemons (Debian's etcd-server, memcached and
# rabbitmq-server), alternating rounds, medians and ratios. About 9 minutes.
bench: build
	$(GO) run ./bench/kvbench -substrate bin/substrate
	$(GO) run ./bench/cachebench -substrate bin/substrate
	$(GO) run ./bench/amqpbench -substrate bin/substrate

clean:
	rm -rf bin substrate-data
