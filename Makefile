# imgate — the documented entry points.
GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
# Concurrency is everywhere in this code base: every package is tested with -race.
TESTFLAGS ?= -race -count=1 -timeout 14m
FUZZTIME  ?= 60s

.PHONY: all build run test test-short bench bench-udp-scale bench-weaknet fuzz lint clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/imgate ./cmd/imgate
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/imgate-cli ./tools/imgate-cli
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/imgate-idle ./bench/idle
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/imgate-bench ./bench/imgate-bench
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/imgate-netem ./tools/imgate-netem

# The single-node system with working defaults; data under ./data.
run: build
	$(BIN)/imgate all --data ./data

# The weak-network lab's package runs on its own with -v, so that its table,
# or the reason it skipped (not root, no namespaces, no TUN), shows in the
# output instead of hiding behind "ok".
WEAKNET_PKG := imgate/bench/weaknet

test: build
	$(GO) vet ./...
	$(GO) test $(TESTFLAGS) $$($(GO) list ./... | grep -vx '$(WEAKNET_PKG)')
	$(GO) test $(TESTFLAGS) -v $(WEAKNET_PKG)
	@echo "allocation assertions (the race detector perturbs sync.Pool, so they run without -race):"
	$(GO) test -count=1 -run 'Alloc' ./proto ./broadcast ./gateway ./client
	@echo "connection bursts at full size (the race detector slows handshakes tenfold):"
	$(GO) test -count=1 -run 'Burst' ./transport

test-short:
	$(GO) test -short -count=1 ./...

# Speed and scale live here, never in timed unit tests: every scenario of
# imgate-bench against the floor and nats-server (bench/out/results.json and
# SVG charts), then the micro-benchmarks.
bench: build
	$(BIN)/imgate-bench all --out bench/out
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./proto ./broadcast ./gateway

# Past the descriptor limit: 50,000 KCP sessions and 50,000 QUIC connections
# on one gateway process at once, then room pushes to each and to all.
bench-udp-scale: build
	$(BIN)/imgate-bench udpscale --out bench/out

# Push latency and delivery per transport under 5% loss + 100 ms RTT and 20%
# loss + 200 ms RTT, through the imgate-netem shim between two network
# namespaces (root only; about 4 minutes of wall time, little CPU). Writes
# bench/out/results.json (weaknet_* keys) and bench/out/weaknet.md.
bench-weaknet: build
	$(BIN)/imgate-bench weaknet --out bench/out

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) -parallel 1 ./proto
	$(GO) test -run '^$$' -fuzz FuzzParseBodies -fuzztime $(FUZZTIME) -parallel 1 ./proto
	$(GO) test -run '^$$' -fuzz FuzzStreamCodec -fuzztime $(FUZZTIME) -parallel 1 ./transport
	$(GO) test -run '^$$' -fuzz FuzzWebSocketCodec -fuzztime $(FUZZTIME) -parallel 1 ./transport
	$(GO) test -run '^$$' -fuzz FuzzKCPDatagram -fuzztime $(FUZZTIME) -parallel 1 ./transport
	$(GO) test -run '^$$' -fuzz FuzzInput -fuzztime $(FUZZTIME) -parallel 1 ./transport/arq

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf $(BIN) bench/out
