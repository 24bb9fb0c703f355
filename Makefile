# provenanced — see README.md and docs/development.md.
GO      ?= go
BIN     ?= bin/provenanced
DEV_DIR ?= .dev
# The version is the release constant of cmd/provenanced/version.go (CHANGELOG.md has the
# history); the revision is the commit, which `provenanced version` prints beside it.
VERSION ?= $(shell sed -n 's/^const release = "\(.*\)"$$/\1/p' cmd/provenanced/version.go)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -X main.version=$(VERSION) -X github.com/ib1/provenanced/daemon.Revision=$(REVISION)
CONTAINER ?= podman

.PHONY: build run deps test race original-client bench bench-smoke bench-go lint fuzz fuzz-smoke clean testenv image

## build: the daemon binary in bin/ (the first build downloads the Go modules and compiles for minutes)
build:
	@[ -x $(BIN) ] || echo "Building $(BIN) $(VERSION): the first build downloads the Go modules and compiles some 400 packages (the standard library included), which takes a few minutes; each package is named as it compiles." >&2
	$(GO) build -v -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/provenanced

## run: the daemon on its embedded default (a development PKI and PEM key in .dev/)
run: build
	$(BIN) serve -dev $(DEV_DIR)

# HEALTHCHECK exists in Docker's image format only: podman and buildah build OCI images
# unless told otherwise, and an OCI image drops it. docker build has no --format.
IMAGE_FORMAT = $(if $(filter podman buildah,$(notdir $(firstword $(CONTAINER)))),--format docker)

## image: the container image provenanced:VERSION (CONTAINER=docker for docker)
image:
	$(CONTAINER) build $(IMAGE_FORMAT) -f deploy/container/Containerfile --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) -t provenanced:$(VERSION) .

## testenv: a SoftHSM token with a P-256 key, a test PKI and a config in .testenv/, to try the PKCS#11 backend
testenv: build
	$(GO) run ./testenv/cmd/testenv -dir .testenv -bin $(BIN)

## deps: install what the tests need beyond Go (Debian packages; as root), or say what
deps:
	@bash .ci/deps

## test: vet, then every test; installs the Debian packages the tests use first (see .ci/deps)
test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

## race: the packages whose tests run the daemon's code in process, under the race detector, and
## cmd/provenanced's tests of the daemon with KMS keys (TestAWSKMS*), which serve it in process
## (its other end-to-end tests run a separately built binary, which -race would not reach)
RACE_PKGS ?= ./api/... ./audit/ ./daemon/ ./conf/ ./backends/... ./provenance/ ./client/ ./internal/...
RACE_E2E  ?= ^TestAWSKMS
race:
	$(GO) test -race -count=1 -timeout 20m $(RACE_PKGS)
	$(GO) test -race -count=1 -timeout 20m -run '$(RACE_E2E)' ./cmd/provenanced/

## original-client: the original service's own test_client.py, unchanged, against the daemon in
## its place (ORIGINAL_CLIENT=path/to/test_client.py from github.com/icebreakerone/provenance-service;
## not in this repository, whose licence it does not grant); as root
original-client:
	PROVENANCED_ORIGINAL_CLIENT=$(abspath $(ORIGINAL_CLIENT)) $(GO) test -tags originalclient -count=1 -run '^TestOriginalTestClientUnchanged$$' ./cmd/provenanced/

## bench: the real daemon on every backend against in-process baselines; the table goes to bench/results.md
bench:
	$(GO) run ./bench -out bench/results.md

## bench-smoke: a small run of the same harness, to prove it works (CI runs it; no speed figure fails it)
bench-smoke:
	$(GO) run ./bench -smoke -out ''

## bench-go: the Go benchmarks of each package (go test -bench)
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./...

## fuzz: fuzz record verification and decoding for FUZZTIME (default 5m), seeded with the reference vectors
FUZZTIME ?= 5m
# FUZZMINIMIZE bounds the time spent shrinking each new interesting input: a record is a few
# KB and every try costs ECDSA verifications, so Go's default of a minute would take most of
# a short run (the execs counter stands still meanwhile).
FUZZMINIMIZE ?= 60s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./provenance/

## fuzz-smoke: FuzzVerify and FuzzParseJSON for 15 seconds each (CI)
fuzz-smoke:
	$(MAKE) fuzz FUZZTIME=15s FUZZMINIMIZE=2s
	$(GO) test -run '^$$' -fuzz '^FuzzParseJSON$$' -fuzztime 15s -fuzzminimizetime 2s ./provenance/

## lint: formatting and vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# The pages' npm files and the OpenAPI lint (README, Pages).
.PHONY: assets openapi-lint

## assets: fetch the pinned npm files the pages embed (api/assets), checked against api/assets/SHA256SUMS
assets:
	bash api/assets/fetch.sh

## openapi-lint: lint api/openapi.json with redocly's recommended rules (npm, into a temporary directory)
openapi-lint:
	bash api/lint-openapi.sh

clean:
	rm -rf bin
