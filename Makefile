# provenanced — see README.md.
GO      ?= go
BIN     ?= bin/provenanced
DEV_DIR ?= .dev
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: build run test bench lint fuzz clean testenv

## build: the daemon binary in bin/
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/provenanced

## run: the daemon on its embedded default (a development PKI and PEM key in .dev/)
run: build
	$(BIN) serve -dev $(DEV_DIR)

## testenv: a SoftHSM token with a P-256 key, a test PKI and a config in .testenv/, to try the PKCS#11 backend
testenv: build
	$(GO) run ./testenv/cmd/testenv -dir .testenv -bin $(BIN)

## test: vet, then every test (SoftHSM, the KMS emulator, openssl and python3-cryptography must be installed: see .ci/run)
test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

## bench: the benchmarks
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

## lint: formatting and vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin
