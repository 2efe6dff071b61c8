# poplar: `make run` serves demo mail on 127.0.0.1:1110; `make test` runs every check.
SHELL := /bin/bash
CARGO ?= cargo
DEMO := target/demo

.PHONY: run test deps fmt clippy unit

run:
	$(CARGO) build --release
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	cp examples/demo/alice.mbox $(DEMO)/alice
	cp examples/demo/bob.mbox $(DEMO)/bob
	@echo
	@echo "poplar demo (--dev mode) on 127.0.0.1:1110 (mail in $(DEMO), reset by every 'make run')"
	@echo "  users: alice (3 messages), bob (1 message), or any new name; any password works"
	@echo "  try:   telnet 127.0.0.1 1110    then USER alice / PASS alice / STAT / LIST / RETR 1 / DELE 1 / QUIT"
	@echo "  stop:  Ctrl-C"
	@echo
	exec ./target/release/poplar --dev $(DEMO) --dev-any-password --listen 127.0.0.1:1110

# Tools the tests drive: python3 with poplib (also execs poplar with inherited sockets for the
# socket-activation test), and curl (installed from Debian if missing).
deps:
	@command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3; }
	@python3 -c 'import poplib' || { echo "python3 lacks poplib" >&2; exit 1; }
	@command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl; }
# The docs tests check the man page with groff and the example units with systemd-analyze;
# each skips with a printed reason if its tool could not be installed.
	@command -v groff >/dev/null || { apt-get update -qq && apt-get install -y -qq groff-base; } || true
	@command -v systemd-analyze >/dev/null || { apt-get update -qq && apt-get install -y -qq systemd; } || true

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

unit: deps
	$(CARGO) test

test: deps fmt clippy unit
