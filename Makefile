# perflock build and test entry points. `make help` lists them.
GO      ?= go
BIN     ?= bin
CMDS    := perfrun pls wholock perflockd
GOFLAGS ?=

.PHONY: all build test test-race check bench bench-static cover fmt vet help docs deb install soak fuzz

all: build

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# The clients link no C (CGO_ENABLED=0), as the Debian package ships them:
# each start then skips the dynamic loader, a job's cost. perflockd keeps
# cgo here for os/user's NSS lookups (user names from LDAP and the like).
CLIENTS := perfrun pls wholock
build: ## build the four commands into ./bin
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(CLIENTS))
	$(GO) build -o $(BIN)/ ./cmd/perflockd

vet: ## go vet and gofmt check
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }

test: ## unit and host-tier tests (root gets the cgroup tests)
	$(GO) test -race -count=1 ./...

cover: ## lockq statement coverage
	$(GO) test -count=1 -coverprofile=lockq.out ./lockq/ && $(GO) tool cover -func=lockq.out | tail -1

soak: ## 1,000 concurrent clients for 60 s with an independent overlap audit (make test runs it for 10 s)
	PERFLOCK_SOAK=$${PERFLOCK_SOAK:-60s} $(GO) test -count=1 -timeout 15m -run Soak -v ./test/e2e/ | grep -E '^(---|ok|FAIL)|soak_test.go'

fuzz: ## fuzz the wire decoder (FUZZTIME, default 60s); new inputs land in proto/testdata/fuzz
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $${FUZZTIME:-60s} ./proto/

check: vet test test-systemd ## the full test suite, as CI runs it

test-systemd: ## systemd-tier tests as root in QEMU guests (Debian bookworm and trixie); PERFLOCK_VM_SUITES=bookworm for one
	GO=$(GO) test/vm/run

docs: ## regenerate the completions (contrib/completion) and manual pages (docs/man)
	$(GO) run ./cmd/internal/gendocs -out .

deb: ## a Debian package: bin/perflock_VERSION_ARCH.deb
	GO=$(GO) BIN=$(BIN) contrib/deb/build

PREFIX  ?= /usr/local
SHARE   := $(DESTDIR)$(PREFIX)/share
install: ## after make build: commands, completions and manual pages under $(DESTDIR)$(PREFIX), systemd units (perflockd install)
	@test -x $(BIN)/perflockd || { echo 'run make build first'; exit 1; }
	install -d $(DESTDIR)$(PREFIX)/bin $(SHARE)/bash-completion/completions $(SHARE)/zsh/site-functions \
		$(SHARE)/fish/vendor_completions.d $(SHARE)/man/man1 $(SHARE)/man/man8
	install -m 0755 $(addprefix $(BIN)/,$(CMDS)) $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 contrib/completion/bash/* $(SHARE)/bash-completion/completions/
	install -m 0644 contrib/completion/zsh/* $(SHARE)/zsh/site-functions/
	install -m 0644 contrib/completion/fish/* $(SHARE)/fish/vendor_completions.d/
	install -m 0644 docs/man/*.1 $(SHARE)/man/man1/
	install -m 0644 docs/man/*.8 $(SHARE)/man/man8/
	$(DESTDIR)$(PREFIX)/bin/perflockd install --bin $(PREFIX)/bin/perflockd $(if $(DESTDIR),--root $(DESTDIR))

bench: ## lockq micro-benchmarks, then the scenarios against flock(1): writes docs/benchmarks.md and docs/bench/*.svg
	$(MAKE) --no-print-directory build
	$(GO) test -run '^$$' -bench . -benchmem ./lockq/
	$(GO) run ./bench -bin $(BIN)

STATIC  ?= $(BIN)/static
bench-static: ## static binaries (CGO_ENABLED=0; GOARCH= for another CPU) of the commands and the bench program in bin/static, to run the bench on a machine without Go: see docs/benchmarks.md
	@mkdir -p $(STATIC)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(STATIC)/ $(addprefix ./cmd/,$(CMDS))
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.buildCommit=$$(git describe --always --dirty 2>/dev/null)" -o $(STATIC)/bench ./bench
	@echo "copy $(STATIC) to the machine, then as root there: ./bench -bin . -note 'what the machine is' (writes docs/benchmarks.md and docs/bench/*.svg)"

bench-systemd: ## the bench scenarios under systemd in a QEMU bookworm guest: writes docs/bench/systemd-bookworm.md (ratios only)
	PERFLOCK_VM_BENCH=1 PERFLOCK_VM_SUITES=bookworm PERFLOCK_VM_TIMEOUT=1800 GO=$(GO) test/vm/run
