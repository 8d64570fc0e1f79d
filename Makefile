# imgate — the documented entry points.
GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
# Concurrency is everywhere in this code base: every package is tested with -race.
TESTFLAGS ?= -race -count=1 -timeout 14m
FUZZTIME  ?= 60s

.PHONY: all build run test test-short bench bench-udp-scale bench-weaknet fuzz lint clean install install-bin deb

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/imgate ./cmd/imgate
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/imgate-cli ./tools/imgate-cli
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/imgate-echo ./tools/imgate-echo
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
	@echo "QUIC 0-RTT (quic-go races with itself there, quic-go/quic-go#4303: without -race):"
	$(GO) test -count=1 -run '0RTT' ./transport ./gateway ./client
	@echo "connection bursts at full size (the race detector slows handshakes tenfold):"
	$(GO) test -count=1 -run 'Burst' ./transport

test-short:
	$(GO) test -short -count=1 ./...

# Speed and scale live here, never in timed unit tests: every scenario of
# imgate-bench against the floor and nats-server (bench/out/results.json and
# SVG charts), then the micro-benchmarks.
bench: build
	$(BIN)/imgate-bench all --out bench/out
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./proto ./broadcast ./gateway ./cluster ./steer

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
	$(GO) test -run '^$$' -fuzz FuzzToken -fuzztime $(FUZZTIME) -parallel 1 ./cluster
	$(GO) test -run '^$$' -fuzz FuzzRespond -fuzztime $(FUZZTIME) -parallel 1 ./steer

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf $(BIN) bench/out

# --- install and package -------------------------------------------------
# `make install` (as root) puts imgate on this host: binaries under
# $(PREFIX)/bin, units in $(UNITDIR) (ExecStart rewritten to $(PREFIX)/bin),
# the kernel and limits tuning in /etc, a commented config in
# /etc/imgate/imgate.toml unless one is there, and /var/lib/imgate. Create
# the system user first (the .deb's postinst does it):
#   useradd --system --home-dir /var/lib/imgate --shell /usr/sbin/nologin imgate
# DESTDIR stages everything under another root (the .deb is built that way).
PREFIX    ?= /usr/local
DESTDIR   ?=
UNITDIR   ?= /etc/systemd/system
DOCDIR    ?= $(PREFIX)/share/doc/imgate
INSTALL   ?= install
UNITS     := $(wildcard systemd/*.service)

# The installed binaries are static (no cgo): one .deb runs on any glibc.
install-bin:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/imgate ./cmd/imgate
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/imgate-cli ./tools/imgate-cli

install: install-bin
	$(INSTALL) -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) $(DESTDIR)/etc/imgate \
		$(DESTDIR)/etc/sysctl.d $(DESTDIR)/etc/security/limits.d $(DESTDIR)$(DOCDIR)/grafana
	$(INSTALL) -m 0755 $(BIN)/imgate $(BIN)/imgate-cli $(DESTDIR)$(PREFIX)/bin/
	for u in $(UNITS); do \
		sed 's|/usr/bin/imgate|$(PREFIX)/bin/imgate|g' $$u > $(DESTDIR)$(UNITDIR)/$$(basename $$u) && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$(basename $$u) || exit 1; done
	$(INSTALL) -m 0644 systemd/sysctl.d/90-imgate.conf $(DESTDIR)/etc/sysctl.d/90-imgate.conf
	$(INSTALL) -m 0644 systemd/limits.d/imgate.conf $(DESTDIR)/etc/security/limits.d/imgate.conf
	@# Never overwrite an operator's config.
	if [ ! -e $(DESTDIR)/etc/imgate/imgate.toml ]; then \
		sed -e 's|^node_id = |# node_id = |' -e 's|^data_dir = .*|data_dir = "/var/lib/imgate"|' \
			docs/imgate.example.toml > $(DESTDIR)/etc/imgate/imgate.toml && \
		chmod 0640 $(DESTDIR)/etc/imgate/imgate.toml; \
	else echo "keeping existing $(DESTDIR)/etc/imgate/imgate.toml"; fi
	$(INSTALL) -m 0644 README.md docs/imgate.example.toml $(DESTDIR)$(DOCDIR)/
	if [ -e docs/OPERATIONS.md ]; then $(INSTALL) -m 0644 docs/OPERATIONS.md $(DESTDIR)$(DOCDIR)/; fi
	if [ -e docs/grafana/imgate.json ]; then $(INSTALL) -m 0644 docs/grafana/imgate.json $(DESTDIR)$(DOCDIR)/grafana/; fi
	$(INSTALL) -d -m 0750 $(DESTDIR)/var/lib/imgate $(DESTDIR)/var/log/imgate
	@# On a live install (no DESTDIR) hand the state to the imgate user if it exists.
	if [ -z "$(DESTDIR)" ] && getent passwd imgate >/dev/null; then \
		chown imgate:imgate /var/lib/imgate /var/log/imgate; chgrp imgate /etc/imgate /etc/imgate/imgate.toml; \
		if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; fi

# `make deb` builds $(DEBOUT)/imgate_<version>_<arch>.deb with dpkg-deb:
# PREFIX=/usr, units in /usr/lib/systemd/system, maintainer scripts from
# packaging/debian (user imgate, /var/lib/imgate, daemon-reload; nothing is
# started). The version comes from git describe, made Debian-legal.
DEBOUT    ?= $(BIN)
DEBROOT   ?= $(BIN)/deb-root
DEBARCH   ?= $(shell dpkg --print-architecture 2>/dev/null || $(GO) env GOARCH)
DEBVERSION ?= $(shell echo '$(VERSION)' | sed -e 's/^v//' -e 's/^\([^0-9]\)/0~git\1/' -e 's/[-_]/+/g')

deb:
	@command -v dpkg-deb >/dev/null || { echo "make deb needs dpkg-deb (apt-get install dpkg)"; exit 1; }
	rm -rf $(DEBROOT)
	$(MAKE) --no-print-directory install DESTDIR=$(abspath $(DEBROOT)) PREFIX=/usr UNITDIR=/usr/lib/systemd/system
	$(INSTALL) -d $(DEBROOT)/DEBIAN
	sed -e 's|@VERSION@|$(DEBVERSION)|' -e 's|@ARCH@|$(DEBARCH)|' \
		-e "s|@SIZE@|$$(du -sk --exclude=DEBIAN $(DEBROOT) | cut -f1)|" packaging/debian/control.in > $(DEBROOT)/DEBIAN/control
	$(INSTALL) -m 0644 packaging/debian/conffiles.in $(DEBROOT)/DEBIAN/conffiles
	$(INSTALL) -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm $(DEBROOT)/DEBIAN/
	@mkdir -p $(DEBOUT)
	dpkg-deb --root-owner-group -Zgzip --build $(DEBROOT) $(DEBOUT)/imgate_$(DEBVERSION)_$(DEBARCH).deb
