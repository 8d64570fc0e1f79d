# imgate — the documented entry points.
GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
# Concurrency is everywhere in this code base: every package is tested with -race.
TESTFLAGS ?= -race -count=1 -timeout 14m
FUZZTIME  ?= 60s

.PHONY: all build run test test-short bench fuzz lint clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/imgate ./cmd/imgate
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/imgate-cli ./tools/imgate-cli
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/imgate-echo ./tools/imgate-echo
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/imgate-idle ./bench/idle
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/imgate-bench ./bench/imgate-bench

# The single-node system with working defaults; data under ./data.
run: build
	$(BIN)/imgate all --data ./data

test: build
	$(GO) vet ./...
	$(GO) test $(TESTFLAGS) ./...
	@echo "allocation assertions (the race detector perturbs sync.Pool, so they run without -race):"
	$(GO) test -count=1 -run 'Alloc' ./proto ./broadcast ./gateway ./client

test-short:
	$(GO) test -short -count=1 ./...

# Speed and scale live here, never in timed unit tests: every scenario of
# imgate-bench against the floor and nats-server (bench/out/results.json and
# SVG charts), then the micro-benchmarks.
bench: build
	$(BIN)/imgate-bench all --out bench/out
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./proto ./broadcast ./gateway ./cluster

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) -parallel 1 ./proto
	$(GO) test -run '^$$' -fuzz FuzzParseBodies -fuzztime $(FUZZTIME) -parallel 1 ./proto
	$(GO) test -run '^$$' -fuzz FuzzStreamCodec -fuzztime $(FUZZTIME) -parallel 1 ./transport
	$(GO) test -run '^$$' -fuzz FuzzWebSocketCodec -fuzztime $(FUZZTIME) -parallel 1 ./transport
	$(GO) test -run '^$$' -fuzz FuzzToken -fuzztime $(FUZZTIME) -parallel 1 ./cluster

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf $(BIN) bench/out
