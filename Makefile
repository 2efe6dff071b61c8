# poplar: `make run` serves demo mail on 127.0.0.1:1110 (`make run-tls` adds STLS and POP3S on
# 127.0.0.1:1995 with a fresh self-signed certificate); `make test` runs every check;
# `make bench` compares poplar with Dovecot on loopback (docs/performance.md).
SHELL := /bin/bash
CARGO ?= cargo
DEMO := target/demo

.PHONY: run run-tls demo-mail test deps tls-deps fmt clippy layout unit fuzz bench

demo-mail:
	$(CARGO) build --release
	rm -rf $(DEMO) && mkdir -p $(DEMO)/mail
	cp examples/demo/users $(DEMO)/users
	cp examples/demo/alice.mbox $(DEMO)/mail/alice
	cp examples/demo/bob.mbox $(DEMO)/mail/bob

# --dev serves the demo mailboxes in $(DEMO)/mail to any user name, with any password.
# --mbox-unquote: `poplar seed` writes mboxrd, so seeded '>From ' lines come back as written.
run: demo-mail
	@echo
	@echo "poplar demo (--dev mode) on 127.0.0.1:1110 (mail in $(DEMO)/mail, reset by every 'make run')"
	@echo "  users: alice (3 messages), bob (1 message), or any new name; any password works"
	@echo "  try:   telnet 127.0.0.1 1110    then USER alice / PASS alice / STAT / LIST / RETR 1 / DELE 1 / QUIT"
	@echo "  more mail: ./target/release/poplar seed --dev $(DEMO)/mail --to NAME FILE.eml|DIR|MBOX..."
	@echo "  stop:  Ctrl-C"
	@echo
	exec ./target/release/poplar --dev $(DEMO)/mail --dev-any-password --mbox-unquote --listen 127.0.0.1:1110

# The TLS demo: a self-signed certificate for localhost and 127.0.0.1, made at every start.
run-tls: demo-mail tls-deps
	mkdir -p $(DEMO)/tls
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
	  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
	  -keyout $(DEMO)/tls/key.pem -out $(DEMO)/tls/cert.pem 2>/dev/null
	@echo
	@echo "poplar TLS demo: STLS on 127.0.0.1:1110, implicit TLS (POP3S) on 127.0.0.1:1995"
	@echo "  certificate: $(DEMO)/tls/cert.pem (self-signed, new at every 'make run-tls')"
	@echo "  users: alice (password alice, 3 messages), bob (password bob, 1 message)"
	@echo "  try:   openssl s_client -starttls pop3 -crlf -connect 127.0.0.1:1110 -CAfile $(DEMO)/tls/cert.pem"
	@echo "         openssl s_client -crlf -connect 127.0.0.1:1995 -CAfile $(DEMO)/tls/cert.pem"
	@echo "         curl --cacert $(DEMO)/tls/cert.pem -u alice:alice pop3s://127.0.0.1:1995/1"
	@echo "  reload the certificate: kill -HUP <pid>;  stop: Ctrl-C"
	@echo
	exec ./target/release/poplar --listen 127.0.0.1:1110 --listen-tls 127.0.0.1:1995 \
	  --tls-cert $(DEMO)/tls/cert.pem --tls-key $(DEMO)/tls/key.pem \
	  --users $(DEMO)/users --mail '$(DEMO)/mail/%n' --mbox-unquote

# openssl, for the TLS demo's certificate and the s_client test.
tls-deps:
	@command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl; }

# Tools the tests drive: python3 with poplib (it also execs poplar with inherited sockets for
# the socket-activation test), and curl (installed from Debian if missing).
deps: tls-deps
	@command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3; }
	@python3 -c 'import poplib, ssl' || { echo "python3 lacks poplib or ssl" >&2; exit 1; }
	@command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl; }
	@# Reference password tools for tests/clients/schemes.rs: mkpasswd, openssl passwd, doveadm pw.
	@command -v mkpasswd >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends whois; }
	@command -v doveadm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dovecot-core; }
	@# Dovecot's own POP3 server, which tests/clients/dovecot.rs compares poplar with.
	@test -x /usr/lib/dovecot/pop3 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dovecot-pop3d; }
	@python3 -W ignore -c 'import crypt' || { echo "python3 lacks the crypt module" >&2; exit 1; }
	@# The mail fetchers tests/clients/interop.rs drives: fetchmail and getmail6 from Debian.
	@command -v fetchmail >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fetchmail; }
	@command -v getmail >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends getmail6; }
# The docs tests check the man page with groff and the example units with systemd-analyze;
# each skips with a printed reason if its tool could not be installed.
	@command -v groff >/dev/null || { apt-get update -qq && apt-get install -y -qq groff-base; } || true
	@command -v systemd-analyze >/dev/null || { apt-get update -qq && apt-get install -y -qq systemd; } || true

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

# Imports point down only (docs/architecture.md). Each rule: a room, then the modules of the
# crate it must never name (as `crate::NAME` or inside a `crate::{...}` list). `limits.rs`
# names nothing of the crate; the other leaves name only `limits`.
NOT_LEAVES := auth,cli,config,mailbox,protocol,run,server,session,logsafe,hostname,line_ends,plural
LAYOUT_RULES := \
	src/mailbox:config,session,server,run,cli,auth,protocol \
	src/protocol:config,session,server,run,cli,auth,mailbox \
	src/auth:config,session,server,run,cli,protocol \
	src/session:config,server,run,cli \
	src/config.rs:session,server,run,cli \
	src/server:run,cli \
	src/run:cli \
	src/cli:run,server,session \
	src/limits.rs:ALL \
	src/logsafe.rs:$(NOT_LEAVES) src/hostname.rs:$(NOT_LEAVES) src/line_ends.rs:$(NOT_LEAVES) \
	src/plural.rs:$(NOT_LEAVES)

layout:
	@bad=0; for rule in $(LAYOUT_RULES); do \
		room=$${rule%%:*}; never=$${rule#*:}; \
		if [ "$$never" = ALL ]; then pattern='crate::'; \
		else names=$${never//,/|}; \
			pattern="crate::($$names)\b|crate::\{[^}]*\b($$names)\b"; fi; \
		if grep -rnE "$$pattern" $$room; then \
			echo "layout: $$room must not import $$never (imports point down only)" >&2; bad=1; \
		fi; \
	done; exit $$bad

unit: deps
	$(CARGO) test

test: deps fmt clippy layout unit

# Fuzzing (fuzz/): each target runs FUZZ_SECONDS (default 60) from the corpus kept in
# fuzz/corpus/. cargo-fuzz wants nightly flags (-Z sanitizer); RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept them.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := parse sasl session index journal

fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
		echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			|| exit 1; \
	done

# poplar against Dovecot on 127.0.0.1, one table of medians (installs dovecot-pop3d if missing).
bench:
	$(CARGO) build --release --bin poplar --example loadgen
	bash examples/bench/run.sh
