# perflock build and test entry points. `make help` lists them.
GO      ?= go
BIN     ?= bin
CMDS    := perfrun pls wholock perflockd
GOFLAGS ?=

.PHONY: all build test test-race check bench cover fmt vet help

all: build

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## build the four commands into ./bin
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

vet: ## go vet and gofmt check
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }

test: ## unit and host-tier tests (root gets the cgroup tests)
	$(GO) test -race -count=1 ./...

cover: ## lockq statement coverage
	$(GO) test -count=1 -coverprofile=lockq.out ./lockq/ && $(GO) tool cover -func=lockq.out | tail -1

check: vet test test-systemd ## the full test suite, as CI runs it

test-systemd: ## systemd-tier tests as root in QEMU guests (Debian bookworm and trixie); PERFLOCK_VM_SUITES=bookworm for one
	GO=$(GO) test/vm/run

bench: ## micro-benchmarks
	$(GO) test -run '^$$' -bench . -benchmem ./lockq/
