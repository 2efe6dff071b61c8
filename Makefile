# poplar: `make run` serves demo mail on 127.0.0.1:1110 (`make run-tls` adds STLS and POP3S on
# 127.0.0.1:1995 with a fresh self-signed certificate); `make test` runs every check;
# `make bench` compares poplar with Dovecot, and its static build with its glibc build, on
# loopback (docs/performance.md); `make dist` builds the static binaries and tarballs for
# x86_64, aarch64 and armv7 hosts into dist/ (docs/operations.md).
SHELL := /bin/bash
CARGO ?= cargo
DEMO := target/demo

.PHONY: run run-tls demo-mail test deps tls-deps fmt clippy layout unit fuzz bench install uninstall \
	static-deps static static-test dist-deps dist $(foreach t,$(STATIC) $(CROSS),build-$(t))

demo-mail:
	rm -rf $(DEMO) && mkdir -p $(DEMO)/mail
	cp examples/demo/users $(DEMO)/users
	cp examples/demo/alice.mbox $(DEMO)/mail/alice
	cp examples/demo/bob.mbox $(DEMO)/mail/bob

# --dev serves the demo mailboxes in $(DEMO)/mail to any user name, with any password, over
# POP3 and takes mail over SMTP (Mailpit's port: apps set up for Mailpit send here unchanged).
# --mbox-unquote: `poplar seed` and SMTP write mboxrd, so '>From ' lines come back as written.
# Nothing here names an address: poplar prints each one once it listens on it, and exits with
# the reason instead when one is taken. RUN_BIN is the binary run: the release build by
# default (built first when a source is newer), or another, e.g. `RUN_BIN=target/debug/poplar`.
POP3 ?= 127.0.0.1:1110
SMTP ?= 127.0.0.1:1025
HTTP ?= 127.0.0.1:8025
RUN_BIN ?= target/release/poplar
run: $(RUN_BIN) demo-mail
	@echo
	@echo "poplar demo (--dev mode): mail in $(DEMO)/mail, reset by every 'make run'"
	@echo "  users: alice (3 messages), bob (1 message), or any new name; any password works"
	@echo "  POP3:  telnet to the address below, then USER alice / PASS alice / STAT / LIST / RETR 1 / DELE 1 / QUIT"
	@echo "  more mail: send it over SMTP to the address below, or seed it as poplar shows"
	@echo "  the page and the API: the HTTP address below (docs/dev.md)"
	@echo "  stop:  Ctrl-C"
	@echo
	@exec $(RUN_BIN) --dev $(DEMO)/mail --dev-any-password --mbox-unquote \
		--listen $(POP3) --dev-smtp $(SMTP) --dev-http $(HTTP)

# The TLS demo: a self-signed certificate for localhost and 127.0.0.1, made at every start.
run-tls: target/release/poplar demo-mail tls-deps
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

# Debian packages are installed as root, through sudo for anyone else. $(call apt,PKGS,WHY)
# says which packages it installs and why before it does.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
apt = { echo "make: installing Debian package(s) $(1): $(2)$(if $(SUDO), (with sudo))"; \
	$(SUDO) apt-get update -qq && \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(1); }

# openssl, for the TLS demo's certificate and the s_client test.
tls-deps:
	@command -v openssl >/dev/null || $(call apt,openssl,the TLS demo certificate and s_client test)

# Tools the tests drive: python3 with poplib (it also execs poplar with inherited sockets for
# the socket-activation test), and curl (installed from Debian if missing).
deps: tls-deps
	@command -v python3 >/dev/null || $(call apt,python3,poplib as a test client)
	@python3 -c 'import poplib, ssl' || { echo "python3 lacks poplib or ssl" >&2; exit 1; }
	@command -v curl >/dev/null || $(call apt,curl,curl as a test client)
	@# Reference password tools for tests/clients/schemes.rs: mkpasswd, openssl passwd, doveadm pw.
	@command -v mkpasswd >/dev/null || $(call apt,whois,mkpasswd for the password scheme tests)
	@command -v doveadm >/dev/null || $(call apt,dovecot-core,doveadm pw for the password scheme tests)
	@# Dovecot's own POP3 server, which tests/clients/dovecot.rs compares poplar with.
	@test -x /usr/lib/dovecot/pop3 || $(call apt,dovecot-pop3d,Dovecot's POP3 server to compare with)
	@python3 -W ignore -c 'import crypt' || { echo "python3 lacks the crypt module" >&2; exit 1; }
	@# pytest for the example suite in examples/pytest (tests/clients/pytest.rs runs it); a
	@# python3 first on the PATH (pyenv, a venv) may lack it where Debian's has it.
	@python3 -c 'import pytest' 2>/dev/null || /usr/bin/python3 -c 'import pytest' 2>/dev/null || \
		$(call apt,python3-pytest,pytest for the example test suite in examples/pytest)
	@# The mail fetchers tests/clients/interop.rs drives: fetchmail and getmail6 from Debian.
	@command -v fetchmail >/dev/null || $(call apt,fetchmail,a mail fetcher as a test client)
	@command -v getmail >/dev/null || $(call apt,getmail6,a mail fetcher as a test client)
	@# strace counts the system calls of a poll (tests/storage/storage_poll.rs, examples/bench/syscalls.sh).
	@command -v strace >/dev/null || $(call apt,strace,to count the system calls of a poll in a test)
	@# A real browser for the --dev-http page test (tests/clients/dev_api.rs).
	@command -v chromium >/dev/null || $(call apt,chromium,a real browser for the dev page test)
# fail2ban-regex, which tests/server/fail2ban.rs runs on the shipped filter. Debian's package
# would start and enable a fail2ban service (with its sshd jail) on this machine: a
# policy-rc.d that denies every start covers the install (unless one is already there), the
# unit is disabled after it, and no firewall package comes with it (--no-install-recommends).
	@command -v fail2ban-regex >/dev/null || { \
		guard=; if [ ! -e /usr/sbin/policy-rc.d ]; then guard=/usr/sbin/policy-rc.d; \
			printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee $$guard >/dev/null && \
			$(SUDO) chmod 0755 $$guard; fi; \
		$(call apt,fail2ban,fail2ban-regex for the filter test; its service is not started); \
		rc=$$?; [ -z "$$guard" ] || $(SUDO) rm -f $$guard; \
		! command -v systemctl >/dev/null || $(SUDO) systemctl disable fail2ban.service >/dev/null 2>&1; \
		exit $$rc; } || true
# The docs tests check the man page with groff and the example units with systemd-analyze;
# each skips with a printed reason if its tool could not be installed.
	@command -v groff >/dev/null || $(call apt,groff-base,groff to check the man page) || true
	@command -v systemd-analyze >/dev/null || $(call apt,systemd,systemd-analyze to check the units) || true

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

# Imports point down only (docs/architecture.md). Each rule: a room, then the modules of the
# crate it must never name (as `crate::NAME` or inside a `crate::{...}` list). `limits.rs`
# names nothing of the crate; the other leaves name only `limits` (`logline.rs` names itself, as
# `$crate::logline`, in the macro it exports to the crate).
COMMA := ,
NOT_LEAVES := auth,cli,config,mailbox,protocol,run,server,session,fault_rules,logsafe,hostname,line_ends,plural,logline,metrics
LAYOUT_RULES := \
	src/mailbox:config,session,server,run,cli,auth,protocol \
	src/protocol:config,session,server,run,cli,auth,mailbox \
	src/smtp:config,session,server,run,cli,auth,mailbox,protocol \
	src/auth:config,session,server,run,cli,protocol \
	src/session:config,server,run,cli \
	src/config.rs:session,server,run,cli \
	src/fault_rules.rs:config,session,server,run,cli,auth,mailbox,smtp \
	src/server:run,cli \
	src/run:cli \
	src/cli:run,server,session \
	src/limits.rs:ALL \
	src/logsafe.rs:$(NOT_LEAVES) src/hostname.rs:$(NOT_LEAVES) src/line_ends.rs:$(NOT_LEAVES) \
	src/plural.rs:$(NOT_LEAVES) src/logline.rs:$(subst $(COMMA)logline,,$(NOT_LEAVES)) \
	src/metrics.rs:$(NOT_LEAVES) src/json.rs:ALL

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

test: deps fmt clippy layout unit static-test

# ---- install ----------------------------------------------------------------------------------
# `make install` (as root, or with DESTDIR for a package or a test) puts the binary, the man
# page, the systemd units (their ExecStart= pointed at BINDIR) and the fail2ban filter and jails
# in place; `make uninstall` removes exactly those files, never a directory. INSTALL_BIN is the
# binary installed: the release build by default (built by cargo when a source is newer), or any
# other, e.g. a static one: `make install INSTALL_BIN=target/x86_64-unknown-linux-musl/release/poplar`.
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
# systemd reads units from /usr/local/lib/systemd/system as well as /usr/lib/systemd/system.
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
INSTALL_BIN ?= target/release/poplar
INSTALLED := $(BINDIR)/poplar $(MANDIR)/man8/poplar.8 $(UNITDIR)/poplar.service \
	$(UNITDIR)/poplar.socket $(SYSCONFDIR)/fail2ban/filter.d/poplar.conf \
	$(SYSCONFDIR)/fail2ban/jail.d/poplar.conf

target/release/poplar: Cargo.toml Cargo.lock $(shell find src -name '*.rs')
	$(CARGO) build --release --locked --bin poplar

install: $(INSTALL_BIN)
	install -D -m 0755 $(INSTALL_BIN) $(DESTDIR)$(BINDIR)/poplar
	install -D -m 0644 docs/poplar.8 $(DESTDIR)$(MANDIR)/man8/poplar.8
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed 's|/usr/local/bin/poplar|$(BINDIR)/poplar|g' examples/poplar.service \
		> $(DESTDIR)$(UNITDIR)/poplar.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/poplar.service
	install -m 0644 examples/poplar.socket $(DESTDIR)$(UNITDIR)/poplar.socket
	install -D -m 0644 examples/fail2ban/filter.d/poplar.conf \
		$(DESTDIR)$(SYSCONFDIR)/fail2ban/filter.d/poplar.conf
	install -D -m 0644 examples/fail2ban/jail.d/poplar.conf \
		$(DESTDIR)$(SYSCONFDIR)/fail2ban/jail.d/poplar.conf
	@echo "installed: $(INSTALLED)"
	@echo "next: the user, /etc/poplar/users and the certificate (docs/operations.md), then"
	@echo "      systemctl daemon-reload && systemctl enable --now poplar.socket"

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))

# ---- static binaries for small hosts ---------------------------------------------------------
# Rust's musl targets bring their own musl libc and start files, so the binaries are static
# and run on any Linux of their architecture (Alpine, old Debian, Raspberry Pi OS). ring builds
# C and assembly for the target: CC_<target> names the compiler, and for the cross targets the
# same Debian cross gcc links (CARGO_TARGET_<TARGET>_LINKER). Nothing goes into a committed
# .cargo/config, so a plain `cargo build` stays what it was.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
# The commit `poplar --version` names, "-dirty" when the tree differs from it.
COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)$(shell \
	git diff --quiet HEAD 2>/dev/null || echo -dirty)
DIST := dist
STATIC := x86_64-unknown-linux-musl
CROSS := aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf
CC.x86_64-unknown-linux-musl := musl-gcc
CC.aarch64-unknown-linux-musl := aarch64-linux-gnu-gcc
CC.armv7-unknown-linux-musleabihf := arm-linux-gnueabihf-gcc
LINKER.aarch64-unknown-linux-musl := aarch64-linux-gnu-gcc
LINKER.armv7-unknown-linux-musleabihf := arm-linux-gnueabihf-gcc
# jemalloc (the 64-bit builds' allocator) takes the page size it is built for as the least it
# runs on: 64 KiB covers arm64 kernels of 4, 16 (Raspberry Pi 5, Asahi) and 64 KiB pages.
ENV.aarch64-unknown-linux-musl := JEMALLOC_SYS_WITH_LG_PAGE=16
# Rust 1.95's stable channel ships no standard library for any 32-bit ARM Linux target (its
# manifest says rust-std "available = false"); a target the default toolchain cannot add is
# built with this one, the newest release that ships it.
FALLBACK_TOOLCHAIN := 1.94.1
# The tests that start the poplar binary, run once more against the static one (POPLAR_BIN):
# the binary's flags and modes, signals, TLS and reload in a process, deliver/check/seed,
# crash and concurrency tests across processes, the docs, the password tool and the fail2ban
# filter against its log. Tests that set POPLAR_FAULT keep cargo's debug build, the only one
# with fault points.
BINARY_TESTS := --test server --test storage --test clients
BINARY_FILTERS := binary:: modes:: reload:: tls:: dev_tools:: storage_deliver:: \
	storage_interrupted:: storage_torture:: storage_concurrency:: storage_uid:: docs:: \
	schemes:: fail2ban:: observe:: inetd_guards:: probe:: edge_cases:: smtp:: dev_api:: idle_memory:: \
	pytest:: make_run:: faults:: oauth::

# toolchain TARGET: `+FALLBACK_TOOLCHAIN` when the default toolchain lacks TARGET, else nothing.
toolchain = $$(rustup target list --installed | grep -qx $(1) || echo +$(FALLBACK_TOOLCHAIN))

# build-TARGET: the stripped static release binary target/TARGET/release/poplar.
build-%:
	t=$*; u=$${t//-/_}; \
	env CC_$$u=$(CC.$*) $(if $(LINKER.$*),CARGO_TARGET_$${u^^}_LINKER=$(LINKER.$*)) $(ENV.$*) \
		POPLAR_COMMIT=$(COMMIT) POPLAR_TARGET=$$t \
		$(CARGO) $(call toolchain,$*) build --release --locked --target $$t --bin poplar
	@if readelf -l target/$*/release/poplar | grep -q 'program interpreter'; then \
		echo "target/$*/release/poplar is not static" >&2; exit 1; fi

# musl-gcc and the x86_64 musl target, for `make test`'s static binary.
static-deps:
	@command -v musl-gcc >/dev/null || $(call apt,musl-tools,musl-gcc for the static binary)
	@command -v readelf >/dev/null || $(call apt,binutils,readelf to check the binary is static)
	@rustup target list --installed | grep -qx $(STATIC) || rustup target add $(STATIC)

static: static-deps build-$(STATIC)

# The quick part of the static binary's tests: the binary-driving ones, against it.
static-test: deps static
	POPLAR_BIN=$(CURDIR)/target/$(STATIC)/release/poplar \
		$(CARGO) test $(BINARY_TESTS) -- $(BINARY_FILTERS)

# Cross compilers (with their C headers, for ring), qemu-user for the tests, and the Rust
# targets: from the default toolchain if it has them, else from FALLBACK_TOOLCHAIN.
dist-deps: static-deps
	@for p in aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu arm-linux-gnueabihf-gcc:gcc-arm-linux-gnueabihf \
		qemu-aarch64-static:qemu-user-static qemu-arm-static:qemu-user-static; do \
		command -v $${p%%:*} >/dev/null || $(call apt,$${p#*:},a cross compiler or qemu-user) \
			|| exit 1; \
	done
	@for h in /usr/aarch64-linux-gnu/include/stdint.h:libc6-dev-arm64-cross \
		/usr/arm-linux-gnueabihf/include/stdint.h:libc6-dev-armhf-cross; do \
		[ -e $${h%%:*} ] || $(call apt,$${h#*:},C headers for a cross target) \
			|| exit 1; \
	done
	@for t in $(CROSS); do \
		rustup target list --installed | grep -qx $$t || rustup target add $$t 2>/dev/null \
		|| rustup toolchain install $(FALLBACK_TOOLCHAIN) --profile minimal --target $$t \
		|| exit 1; \
	done

# Static, stripped binaries for x86_64, aarch64 (Raspberry Pi 3/4/5 on a 64-bit OS) and armv7
# (32-bit Raspberry Pi OS, other ARMv7 boards), each tested where it runs, then one tarball per
# target with what an operator needs beside the binary, and SHA256SUMS.
DIST_FILES := README.md docs/poplar.8 examples/poplar.service examples/poplar.socket
dist: dist-deps static-test $(foreach t,$(CROSS),build-$(t))
	POPLAR_CROSS_BINS="$(foreach t,$(STATIC) $(CROSS),$(t)=$(CURDIR)/target/$(t)/release/poplar)" \
		$(CARGO) test --test clients qemu:: -- --nocapture
	rm -rf $(DIST) && mkdir -p $(DIST)
	@for t in $(STATIC) $(CROSS); do \
		name=poplar-$(VERSION)-$$t; stage=$(DIST)/$$name; \
		mkdir -p $$stage && install -m 0755 target/$$t/release/poplar $$stage/poplar; \
		cp $(DIST_FILES) $$stage/; \
		[ ! -d examples/fail2ban ] || cp -r examples/fail2ban $$stage/fail2ban; \
		for f in LICENSE* COPYING*; do [ ! -e "$$f" ] || cp "$$f" $$stage/; done; \
		tar -C $(DIST) --owner=0 --group=0 --sort=name -czf $$stage.tar.gz $$name && rm -rf $$stage; \
		printf '%-48s %9d bytes stripped\n' "$$name" "$$(stat -c %s target/$$t/release/poplar)"; \
	done
	cd $(DIST) && sha256sum *.tar.gz > SHA256SUMS && cat SHA256SUMS

# Fuzzing (fuzz/): each target runs FUZZ_SECONDS (default 60) from the corpus kept in
# fuzz/corpus/. cargo-fuzz wants nightly flags (-Z sanitizer); RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept them.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := parse sasl session index journal faults

fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
		echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			|| exit 1; \
	done

# poplar against Dovecot and the bare reference server on 127.0.0.1, one table of medians
# (installs dovecot-pop3d if missing); then the glibc build against the static musl build, the
# same table.
bench: static
	$(CARGO) build --release --bin poplar --example loadgen --example bare
	bash examples/bench/run.sh
	BENCH_VS=$(CURDIR)/target/$(STATIC)/release/poplar bash examples/bench/run.sh
