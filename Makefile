# substrate: RabbitMQ, memcached and etcd for an OpenStack controller, in one Go binary.

GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.buildVersion=$(VERSION)

.PHONY: build run test unit integration lint bench clean fuzz fuzz-smoke packages

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/substrate ./cmd/substrate

# Starts every service with its defaults: loopback, data in ./substrate-data.
# ARGS are serve's flags, e.g. beside the real daemons on their ports:
#   make run ARGS="--amqp-port 5673 --memcached-port 11212 --etcd-client-port 2381 --etcd-peer-port 2382 --http-port 15673"
ARGS ?=
run: build
	./bin/substrate serve $(ARGS)

# dist/substrate_VERSION-1_ARCH.deb and dist/substrate-VERSION-1.ARCH.rpm
# from packaging/nfpm.yaml (binary, systemd unit, commented config, data
# directory, the rabbitmqctl and rabbitmq-diagnostics names), built by
# packaging/mkpkg with nfpm as a library. The version counts the commits.
# packaging/check.sh installs the .deb and checks both.
PKG_VERSION ?= 0.1.$(shell git rev-list --count HEAD 2>/dev/null || echo 0)
packages: build
	cd packaging/mkpkg && $(GO) build -o ../../bin/mkpkg .
	rm -f dist/substrate_*.deb dist/substrate-*.rpm
	./bin/mkpkg -version $(PKG_VERSION) -arch $$($(GO) env GOARCH) -out dist

# Unit and integration tests, race detector on. Integration tests drive
# bin/substrate with Debian's clients; a missing client skips its test
# unless SUBSTRATE_REQUIRE_CLIENTS=1 (as .ci/run sets).
# The whole output is kept in bin/test.log. On failure, the lines that
# say what failed (failing tests, their messages; for a timeout, the tests
# that were running) are printed again at the end, where a log's tail
# shows them, with the test code lines the goroutines stood at, most
# frequent first.
test: build
	@{ SUBSTRATE_BIN=$(CURDIR)/bin/substrate $(GO) test -race -count=1 -timeout 15m ./...; echo $$? > bin/test.rc; } 2>&1 | tee bin/test.log
	@rc=$$(cat bin/test.rc); if [ "$$rc" != 0 ]; then \
		echo "==== make test failed (exit $$rc); from bin/test.log:"; \
		grep -E -e '--- FAIL|^FAIL|^panic: |running tests:|^[[:space:]]+Test[[:alnum:]_/-]+ \([0-9.hms]+\)$$|^ +[^ ]+_test\.go:[0-9]+: ' bin/test.log | tail -60; \
		echo "==== test code in goroutine stacks:"; \
		grep -E -o '^[[:space:]]+/[^ ]+_test\.go:[0-9]+' bin/test.log | sed 's|.*/||' | sort | uniq -c | sort -rn | head -15; \
		exit $$rc; fi

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /integration)

integration: build
	SUBSTRATE_BIN=$(CURDIR)/bin/substrate $(GO) test -count=1 -timeout 15m ./integration/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Every Fuzz target in the repository (found with grep, so new ones join
# by themselves), one after the other, FUZZTIME each. A crasher stops the
# run and is left in <pkg>/testdata/fuzz/<FuzzName>/: fix the code and
# commit the input, it then runs as a seed in every `go test`. A bare
# "context deadline exceeded" with no input written is Go 1.26's own race
# at the end of -fuzztime on a loaded machine (golang/go#75804): noted, not
# a failure. -short keeps
# the broker's TestMain from booting RabbitMQ in each fuzz process.
# FUZZMINIMIZETIME bounds the minimizing of each new input (go's default,
# 60 s, would eat a whole run); FUZZPARALLEL=1 on a shared machine.
FUZZTIME         ?= 1m
FUZZMINIMIZETIME ?= 5s
FUZZPARALLEL     ?=
fuzz:
	@set -e; for f in $$(git ls-files --cached --others --exclude-standard '*_test.go' | xargs grep -l '^func Fuzz' | sort); do \
		dir=./$$(dirname $$f); \
		for name in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "== $$name in $$dir for $(FUZZTIME)"; \
			corpus=$$dir/testdata/fuzz/$$name; before=$$(ls $$corpus 2>/dev/null | wc -l); log=$$(mktemp); \
			{ if $(GO) test -short -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) \
				$(if $(FUZZPARALLEL),-parallel $(FUZZPARALLEL)) $$dir; then echo 0 >$$log.rc; else echo $$? >$$log.rc; fi; } 2>&1 | tee $$log; \
			rc=$$(cat $$log.rc); rm -f $$log.rc; \
			if [ "$$rc" != 0 ] && [ "$$(ls $$corpus 2>/dev/null | wc -l)" = "$$before" ] && grep -q '^    context deadline exceeded' $$log; then \
				echo "== $$name: no input written: Go's fuzz coordinator lost its deadline race (golang/go#75804, fixed in Go 1.27), not a crasher"; rc=0; \
			fi; \
			rm -f $$log; [ "$$rc" = 0 ]; \
		done; \
	done

# CI: every target for 10 s.
fuzz-smoke:
	$(MAKE) fuzz FUZZTIME=10s

# Ours against the real daemons (Debian's etcd-server, memcached and
# rabbitmq-server), alternating rounds, medians and ratios. About 9 minutes.
bench: build
	$(GO) run ./bench/kvbench -substrate bin/substrate
	$(GO) run ./bench/cachebench -substrate bin/substrate
	$(GO) run ./bench/amqpbench -substrate bin/substrate
	$(GO) run ./bench/scalebench -substrate bin/substrate
	$(GO) run ./bench/clusterbench -substrate bin/substrate

clean:
	rm -rf bin dist substrate-data
