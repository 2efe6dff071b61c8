#!/usr/bin/env bash
# The system calls of one poll (USER, PASS, STAT, UIDL, QUIT with Python's poplib) of an
# unchanged 20-message mbox, counted by kind with strace: those of the session's thread, and
# those of the whole server from the accept on. The mailbox is indexed by one login first,
# outside the count. 127.0.0.1 only.
#
#   bash examples/bench/syscalls.sh [POPLAR_BINARY]    (default target/release/poplar)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${1:-$ROOT/target/release/poplar}
LOADGEN=$ROOT/target/release/examples/loadgen
command -v strace >/dev/null || { echo "strace is needed (make deps)" >&2; exit 1; }
[ -x "$LOADGEN" ] || { echo "build first: cargo build --release --example loadgen" >&2; exit 1; }

T=$(mktemp -d /tmp/poplar-syscalls.XXXXXX)
PID=
cleanup() { [ -z "$PID" ] || { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }; rm -rf "$T"; }
trap cleanup EXIT
mkdir -p "$T/mail"
echo 'alice:{PLAIN}pw' >"$T/users"
"$LOADGEN" gen --out "$T/mail/alice" --count 20 --size 4096 --seed 1 >/dev/null

# serve [WRAPPER...]: poplar on a free port, its port in $PORT once it listens.
serve() {
    POPLAR_LOG=info "$@" "$BIN" --listen 127.0.0.1:0 --users "$T/users" --mail "$T/mail/%n" \
        --auth-delay 0 2>"$T/log" &
    PID=$!
    for _ in $(seq 100); do
        PORT=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$T/log" | head -n 1)
        [ -n "$PORT" ] && return
        sleep 0.05
    done
    echo "poplar did not start: $(cat "$T/log")" >&2
    exit 1
}
poll() {
    python3 - "$PORT" <<'PY'
import poplib, sys
p = poplib.POP3('127.0.0.1', int(sys.argv[1]))
p.user('alice'); p.pass_('pw'); p.stat(); p.uidl(); p.quit()
PY
}
# stop: ends poplar (under strace, strace's child; strace then ends with it).
stop() {
    local child
    child=$(pgrep -P "$PID" || true)
    kill "${child:-$PID}"
    wait "$PID" 2>/dev/null || true
    PID=
}

serve && poll && stop
serve strace -f -qq -o "$T/trace"
poll
stop
# The session's thread is the one that opened the mailbox; the count starts at the accept.
tid=$(grep -m 1 "mail/alice\"" "$T/trace" | awk '{print $1}')
count() { sed -E 's/^[0-9]+ +//; s/\(.*//' | grep -Ev '^(\+\+\+|---|<\.\.\.)' | sort | uniq -c | sort -rn; }
echo "== session thread: $(grep -c "^$tid " "$T/trace") system calls"
grep "^$tid " "$T/trace" | count
echo "== whole server from the accept on: $(sed -n '/accept4(.*= [0-9]/,$p' "$T/trace" | wc -l) lines"
sed -n '/accept4(.*= [0-9]/,$p' "$T/trace" | count
echo "== in the mail directory (path arguments or descriptors):"
grep "^$tid " "$T/trace" | grep -E "mail/alice" | sed -E 's/^[0-9]+ +//' | cut -c1-150
