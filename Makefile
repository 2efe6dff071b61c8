# poplar: `make run` serves demo mail on 127.0.0.1:1110; `make test` runs every check.
SHELL := /bin/bash
CARGO ?= cargo
DEMO := target/demo

.PHONY: run test deps fmt clippy unit fuzz

run:
	$(CARGO) build --release
	rm -rf $(DEMO) && mkdir -p $(DEMO)/mail
	cp examples/demo/users $(DEMO)/users
	cp examples/demo/alice.mbox $(DEMO)/mail/alice
	cp examples/demo/bob.mbox $(DEMO)/mail/bob
	@echo
	@echo "poplar demo on 127.0.0.1:1110 (mail in $(DEMO)/mail, reset by every 'make run')"
	@echo "  users: alice (password alice, 3 messages), bob (password bob, 1 message)"
	@echo "  try:   telnet 127.0.0.1 1110    then USER alice / PASS alice / STAT / LIST / RETR 1 / DELE 1 / QUIT"
	@echo "  stop:  Ctrl-C"
	@echo
	exec ./target/release/poplar --listen 127.0.0.1:1110 --users $(DEMO)/users --mail '$(DEMO)/mail/%n'

# Tools the tests drive: python3 with poplib, and curl (installed from Debian if missing).
deps:
	@command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3; }
	@python3 -c 'import poplib' || { echo "python3 lacks poplib" >&2; exit 1; }
	@command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl; }
	@# Reference password tools for tests/schemes.rs: mkpasswd, openssl passwd, doveadm pw.
	@command -v mkpasswd >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends whois; }
	@command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends openssl; }
	@command -v doveadm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dovecot-core; }
	@python3 -W ignore -c 'import crypt' || { echo "python3 lacks the crypt module" >&2; exit 1; }

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

unit: deps
	$(CARGO) test

test: deps fmt clippy unit

# Fuzzing (fuzz/): each target runs FUZZ_SECONDS (default 60) from the corpus kept in
# fuzz/corpus/. cargo-fuzz wants nightly flags (-Z sanitizer); RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept them.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := parse sasl session

fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
		echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			|| exit 1; \
	done
