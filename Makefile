# ZenConn. Plain `make` lists the targets.
GO ?= go

.PHONY: help test vet lint fmt-check build run bench bench-micro bench-report bench-idle bench-fanout bench-scale bench-audit bench-static bench-churn bench-cluster bench-tls fuzz

help:
	@echo "targets:"
	@echo "  make run          serve ./public on :8080 with embedded defaults"
	@echo "  make test         vet, gofmt check, the whole test suite with -race, and docker-compose.yml brought up"
	@echo "                    and probed (scripts/test-compose.sh: installs podman, runc, docker-compose if missing)"
	@echo "  make build        build bin/zenconn"
	@echo "  make bench        every benchmark scenario (about 46 min), JSON to bench/results/, rewrites bench/RESULTS.md"
	@echo "                    (ONLY=\"idle fanout\" for some of them; ROUNDS=, DURATION= passed to the scripts)"
	@echo "  make bench-micro  micro-benchmarks (go test -bench) of the hot paths, the shm rings and the store"
	@echo "  make bench-report bench/RESULTS.md again from bench/results/, measuring nothing"
	@echo "  make bench-idle   idle-connection memory vs the baseline server (bench/)"
	@echo "  make bench-fanout fan-out throughput/latency vs the baseline server (bench/)"
	@echo "  make bench-scale  60,000 connections on 4 worker processes (bench/)"
	@echo "  make bench-audit  audit log: fan-out with it on and off, audit records per second (bench/)"
	@echo "  make bench-static static files (1 KiB, 100 KiB) vs nginx with wrk; installs wrk and nginx if missing (bench/)"
	@echo "  make bench-cluster three nodes joined through NATS vs one node and Centrifugo's NATS broker (builds nats-server and Centrifugo once) (bench/)"
	@echo "  make bench-tls    TLS: idle memory, max fan-out, handshakes per core vs plain ZenConn, nginx and Centrifugo with TLS (installs nginx, builds Centrifugo once) (bench/)"
	@echo "  make bench-churn  connection churn (connect, subscribe, publish, close) vs the baseline: cycles/s, growth (bench/)"
	@echo "  make bench-compare BASE=ref [NEW=ref]  zenconn of two commits (NEW: the working tree) on idle, max fan-out and churn, ABBA (~15 min)"
	@echo "  make fuzz         run each fuzz target for a short while"

# bin/zenconn carries the version and commit (zenconn version), as the image does.
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo devel)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)

build:
	$(GO) build -ldflags "-X main.version=$(VERSION) -X main.commit=$(COMMIT)" -o bin/zenconn ./cmd/zenconn

run:
	$(GO) run ./cmd/zenconn serve

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

lint: vet fmt-check

test: lint
	bash scripts/ensure-chromium.sh
	bash scripts/ensure-tls-tools.sh
	bash scripts/ensure-podman.sh
	$(GO) test -race -shuffle=on -count=1 -timeout 12m ./...
	# The protocol suites once more against a node with two worker processes.
	ZENCONN_E2E_WORKERS=2 $(GO) test -race -count=1 -timeout 6m -run 'TestJSON|TestWS|TestFanOut|TestIdentity|TestBinary|TestAPI|TestAccessLog|TestAuditProbe|TestAuditFilters|TestAuditRefusals|TestAuditServerAPI|TestAuditData$$|TestAuditRetention|TestSession' ./e2e/
	# And once more with the clients spread over two nodes of a cluster (NATS embedded in the test); left out:
	# the tests that compare welcome node ids or read one node's connections, sessions or audit records.
	ZENCONN_E2E_CLUSTER=1 $(GO) test -race -count=1 -timeout 6m -run 'TestJSON(Ping|PubSub|DataRoundTrip|Errors|ChannelNames|DuplicateSubscribe|LargeMessage|ConcurrentPublishers)|TestWS|TestFanOut|TestIdentity(StartupChecks|HandshakeTokens|IssuerAudience|PublicKeys|AnonymousDisabled|NoVerifier|AuthOp|PrivateChannels|PublicPublishGranted|Broadcast|TokenExpiryRequired|TokenSubcommand)|TestBinary(TextFrameOnBinary|Requests|PubSub|CrossProtocol|Auth|BroadcastSmaller|SizeTable)|TestAPI(Disabled|KeyTooShort|Auth|Publish|Broadcast|Disconnect)|TestAccessLog|TestAuditServerAPI|TestAuditRetention' ./e2e/
	# docker-compose.yml brought up for real (podman, images built from the Dockerfile) and probed on 8080-8082.
	bash scripts/test-compose.sh

bench:
	bash bench/run-all.sh

bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem ./proto/ ./engine/ ./engine/static/ ./shm/ ./store/

bench-report:
	$(GO) run ./bench/report

bench-idle:
	bash bench/run-idle.sh

bench-fanout:
	bash bench/run-fanout.sh

bench-scale:
	bash bench/run-scale.sh

bench-audit:
	bash bench/run-audit.sh

bench-static:
	bash bench/ensure-tools.sh
	bash bench/run-static.sh

bench-churn:
	bash bench/run-churn.sh

bench-cluster:
	bash bench/run-cluster.sh

bench-tls:
	bash bench/ensure-tools.sh static cluster
	bash bench/run-tls.sh

.PHONY: bench-compare
bench-compare:
	@test -n "$(BASE)" || { echo "usage: make bench-compare BASE=ref [NEW=ref]"; exit 2; }
	bash bench/run-compare.sh $(BASE) $(NEW)

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeJSON$$' -fuzztime 20s ./proto/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeJSONReference$$' -fuzztime 20s ./proto/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeBinary$$' -fuzztime 20s ./proto/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeBinaryReference$$' -fuzztime 20s ./proto/
	$(GO) test -run '^$$' -fuzz '^FuzzValidJSON$$' -fuzztime 20s ./proto/
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime 20s ./auth/
	$(GO) test -run '^$$' -fuzz '^FuzzRead$$' -fuzztime 20s ./shm/
	$(GO) test -run '^$$' -fuzz '^FuzzFrames$$' -fuzztime 20s ./engine/
	$(GO) test -run '^$$' -fuzz '^FuzzHTTP$$' -fuzztime 20s ./engine/
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 20s ./store/
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 20s ./nodemsg/
