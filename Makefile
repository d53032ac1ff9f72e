# Centralino — make run: the demo network; make test: every test.
SHELL    := /bin/bash
GO       ?= go
# Fuzz budget per target, in calls ("50000x"); a duration works too (FUZZTIME=10m).
# A count, not a time: Go 1.26's fuzz coordinator can fail a clean run with
# "context deadline exceeded" when a -fuzztime duration ends (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 50000x
# Shrinking each new input is bounded too: unbounded, it took most of a short
# run on the large PEC and RTP seeds, and found nothing meanwhile. (A failing
# input is shrunk within the same bound, so it may be reported larger.)
FUZZMINTIME ?= 100x
BIN      := bin/centralino

# Fuzz targets run by `make fuzz` (package:Target), a short budget each in `make test`.
FUZZ_TARGETS := ./sip:FuzzHandleRequest ./routing/directory:FuzzStoredValue ./sip:FuzzUDPRegister ./sip:FuzzScanRegister ./sip:FuzzPlainContact ./sip:FuzzInviteGate ./configs:FuzzParse ./media:FuzzRewriteSDP ./media:FuzzRTPPacket ./modules/pec:FuzzParsePEC ./modules/survey:FuzzParseOffer

.PHONY: run build test unit e2e fuzz vet bench clean

run:
	$(GO) run ./cmd/centralino serve

build:
	$(GO) build -o $(BIN) ./cmd/centralino

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l cmd sip media routing modules configs test)" || { gofmt -l cmd sip media routing modules configs test; echo "gofmt needed"; exit 1; }

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /test/e2e)

e2e:
	$(GO) test -count=1 -v ./test/e2e/ 2>&1 | tee .e2e.log | grep -E '^(=== RUN|--- |ok|FAIL|PASS)|panic' ; exit $${PIPESTATUS[0]}

fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		if ! $(GO) test -list "^$$name\$$" $$pkg 2>/dev/null | grep -qx "$$name"; then \
			echo "fuzz target $$name not found in $$pkg"; exit 1; fi; \
		echo "fuzz $$pkg $$name, budget $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINTIME) $$pkg || exit 1; \
	done

test: vet unit e2e fuzz

bench:
	./test/bench/run.sh

clean:
	rm -rf bin .e2e.log
