#!/usr/bin/env bash
# make bench: poplar and Dovecot (Debian's dovecot-pop3d, high-performance login mode) side by
# side on byte-identical copies of the same generated mailboxes, plus a loopback ceiling, on
# 127.0.0.1 only. Prints one table of medians. Expects target/release/{poplar,examples/loadgen,
# examples/bare} (the Makefile builds them). The sessions cell runs a third server too: the bare
# reference (examples/bench/bare.rs: thread per connection over the same mbox files, no locks,
# no index), the ceiling for sessions per second.
#
# BENCH_VS=PATH puts another poplar binary in Dovecot's column instead (make bench runs it with
# the static musl build, to see what musl's allocator and libc cost beside glibc's).
#
# Knobs: BENCH_REPEAT (runs per cell, default 3), BENCH_SCALE (divide mailbox sizes, for a
# quick trial; default 1), BENCH_SECONDS (time per sessions run, and per RETR run: no RETR
# starts after it, one still running is cut at three times it; default 1.5), BENCH_PORT
# (first of three ports, default 21110), BENCH_KEEP=1 keeps the temp dir, BENCH_CELLS (the cells
# to run, default "1 2 3 4 5"; "1" is the sessions cell alone).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
POPLAR=$ROOT/target/release/poplar
LOADGEN=$ROOT/target/release/examples/loadgen
BARE=$ROOT/target/release/examples/bare
CELLS=" ${BENCH_CELLS:-1 2 3 4 5} "
REPEAT=${BENCH_REPEAT:-3}
SCALE=${BENCH_SCALE:-1}
SECS=${BENCH_SECONDS:-1.5}
PP_PORT=${BENCH_PORT:-21110}
DV_PORT=$((PP_PORT + 1))
BR_PORT=$((PP_PORT + 2))
PASS=benchpw
VS=${BENCH_VS:-}
T0=$SECONDS

say() { printf '[%3ds] %s\n' $((SECONDS - T0)) "$*" >&2; }

[ -x "$POPLAR" ] && [ -x "$LOADGEN" ] && [ -x "$BARE" ] || { echo "build first: make bench" >&2; exit 1; }
[ -z "$VS" ] || [ -x "$VS" ] || { echo "BENCH_VS: $VS is not an executable" >&2; exit 1; }
if [ -z "$VS" ] && ! [ -x /usr/sbin/dovecot ]; then
    say "installing dovecot-pop3d"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-pop3d >/dev/null
fi
ulimit -n "$(ulimit -Hn)"

T=$(mktemp -d /tmp/poplar-bench.XXXXXX)
chmod 755 "$T"
PP_PID= VS_PID= BR_PID= DV_CONF=$T/dv/dovecot.conf
cleanup() {
    [ -n "$BR_PID" ] && kill "$BR_PID" 2>/dev/null && wait "$BR_PID" 2>/dev/null
    [ -n "$PP_PID" ] && kill "$PP_PID" 2>/dev/null && wait "$PP_PID" 2>/dev/null
    [ -n "$VS_PID" ] && kill "$VS_PID" 2>/dev/null && wait "$VS_PID" 2>/dev/null
    [ -f "$T/dv/run/master.pid" ] && kill "$(cat "$T/dv/run/master.pid")" 2>/dev/null
    sleep 0.5
    if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "kept $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT

# ---- mailboxes: generated once, copied byte for byte to each server ----------------------
mkdir -p "$T/src" "$T/pp/mail" "$T/dv/"{mail,home,index,run,state}
gen() { "$LOADGEN" gen --out "$T/src/$1" --count "$2" --size "$3" --seed "${4:-1}"; }
say "generating mailboxes (scale 1/$SCALE)"
gen sess 20 4096
gen idle 1 1024
gen r10k $((10000 / SCALE)) 10240
gen r4m $((50 / SCALE)) $((4 * 1048576))
gen r512 1 $((536870912 / SCALE))
gen big100k $((100000 / SCALE)) 1024
gen g1 $((16384 / SCALE)) 65536

# One users file serves both (Dovecot's passwd-file format is poplar's).
{
    for i in $(seq 0 63); do echo "s$i:{PLAIN}$PASS"; done
    for i in $(seq 0 999); do echo "i$i:{PLAIN}$PASS"; done
    for p in a b c; do for i in 0 1 2 3; do echo "$p$i:{PLAIN}$PASS"; done; done
    echo "big:{PLAIN}$PASS"
    echo "g:{PLAIN}$PASS"
} >"$T/users"
chmod 644 "$T/users"

# put SRC USER...: a fresh copy of SRC as each user's mbox on both servers.
put() {
    local src=$1
    shift
    for u in "$@"; do
        # poplar's sidecars (index, session lock, journal) go too: a first login is a first.
        rm -f "$T/pp/mail/$u".poplar-*
        cp "$T/src/$src" "$T/pp/mail/$u"
        cp "$T/src/$src" "$T/dv/mail/$u"
        rm -rf "$T/dv/index/$u" "$T/dv/home/$u"
    done
    chown -R nobody:nogroup "$T/dv/mail" "$T/dv/index" "$T/dv/home"
}
drop() { for u in "$@"; do rm -rf "$T/pp/mail/$u" "$T/pp/mail/$u".poplar-* "$T/dv/mail/$u" "$T/dv/index/$u" "$T/dv/home/$u"; done; }

# ---- servers ----------------------------------------------------------------------------
cat >"$DV_CONF" <<EOF
# Private Dovecot for the benchmark: 127.0.0.1 only, high-performance login mode, auth cache.
base_dir = $T/dv/run
state_dir = $T/dv/state
log_path = $T/dv/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
auth_cache_size = 10M
auth_cache_ttl = 1 hour
auth_cache_negative_ttl = 1 hour
default_login_user = dovenull
default_internal_user = dovecot
default_process_limit = 1500
default_client_limit = 3000
mail_location = mbox:$T/dv/home/%n/mail:INBOX=$T/dv/mail/%n:INDEX=$T/dv/index/%n
passdb {
  driver = passwd-file
  args = $T/users
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$T/dv/home/%n
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $DV_PORT
  }
  service_count = 0
  process_min_avail = 2
  client_limit = 1500
}
service pop3 {
  process_limit = 1500
}
EOF
chown nobody:nogroup "$T/dv/mail" "$T/dv/home" "$T/dv/index"
# serve BINARY PORT MAILDIR LOG: a poplar on 127.0.0.1:PORT in the background.
serve() {
    POPLAR_LOG=${POPLAR_LOG:-info} "$1" --listen "127.0.0.1:$2" --users "$T/users" \
        --mail "$3/%n" --max-connections 1500 --max-per-address 1500 2>"$4" &
}
serve "$POPLAR" "$PP_PORT" "$T/pp/mail" "$T/poplar.log"
PP_PID=$!
# The bare reference reads poplar's copies of the mailboxes (it writes nothing).
"$BARE" --listen "127.0.0.1:$BR_PORT" --users "$T/users" --mail "$T/pp/mail" 2>"$T/bare.log" &
BR_PID=$!
if [ -n "$VS" ]; then
    serve "$VS" "$DV_PORT" "$T/dv/mail" "$T/vs.log"
    VS_PID=$!
else
    /usr/sbin/dovecot -c "$DV_CONF"
fi
# up: whether the second server (Dovecot or BENCH_VS) is accepting.
up() {
    if [ -n "$VS" ]; then (exec 3<>"/dev/tcp/127.0.0.1/$DV_PORT") 2>/dev/null
    else [ -f "$T/dv/run/master.pid" ]; fi
}
for _ in $(seq 50); do
    up && (exec 3<>"/dev/tcp/127.0.0.1/$PP_PORT") 2>/dev/null \
        && (exec 3<>"/dev/tcp/127.0.0.1/$BR_PORT") 2>/dev/null && break
    sleep 0.1
done
if ! kill -0 "$PP_PID" 2>/dev/null || ! kill -0 "$BR_PID" 2>/dev/null || ! up; then
    echo "a server did not start (port $PP_PORT, $DV_PORT or $BR_PORT taken? set BENCH_PORT):" >&2
    tail -5 "$T/poplar.log" "$T/vs.log" "$T/dv/dovecot.log" "$T/bare.log" >&2 2>/dev/null
    exit 1
fi
if [ -n "$VS" ]; then
    DV_PID=$VS_PID
    DV_VERSION="$("$VS" --version | head -n 1)"
    OTHER="$(sed -n 's/.*(\([^,]*\),.*/\1/p' <<<"$DV_VERSION")"
    FIRST="$("$POPLAR" --version | sed -n 's/.*(\([^,]*\),.*/\1/p')"
else
    DV_PID=$(cat "$T/dv/run/master.pid")
    DV_VERSION="Dovecot $(/usr/sbin/dovecot --version)"
    OTHER=Dovecot FIRST=poplar
fi
PP=127.0.0.1:$PP_PORT
DV=127.0.0.1:$DV_PORT
BR=127.0.0.1:$BR_PORT

# ---- measuring --------------------------------------------------------------------------
declare -A R  # R[server|cell] = values, one per repeat
lg() { "$LOADGEN" "$@" --pass "$PASS"; }
kv() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p"; }
add() { R[$1|$2]="${R[$1|$2]:-} $3"; }
addr_of() { case $1 in poplar) echo "$PP" ;; dovecot) echo "$DV" ;; bare) echo "$BR" ;; esac; }
want() { [[ "$CELLS" == *" $1 "* ]]; }
root_of() { case $1 in poplar) echo "$PP_PID" ;; dovecot) echo "$DV_PID" ;; esac; }
# A login per user first, so Dovecot has its index and auth cache warm (and poplar its page cache).
warm() {
    local srv=$1 u
    shift
    for u in "$@"; do lg login --addr "$(addr_of "$srv")" --user "$u" --repeat 1 >/dev/null; done
}

if want 1; then
say "cell 1: sessions (connect USER PASS STAT QUIT)"
put sess $(for i in $(seq 0 63); do echo "s$i"; done)
for srv in poplar dovecot; do warm "$srv" $(seq -f 's%g' 0 63); done
for c in 1 16 64; do
    for _ in $(seq "$REPEAT"); do
        for srv in poplar dovecot bare; do
            out=$(lg sessions --addr "$(addr_of $srv)" --prefix s --users 64 --clients $c --seconds "$SECS")
            add $srv "rate$c" "$(kv rate <<<"$out")"
            add $srv "p99_$c" "$(kv p99_ms <<<"$out")"
            add $srv "err$c" "$(kv errors <<<"$out")"
        done
        out=$(lg ceiling-sessions --clients $c --seconds "$SECS")
        add ceiling "rate$c" "$(kv rate <<<"$out")"
        add ceiling "p99_$c" "$(kv p99_ms <<<"$out")"
    done
done
fi

if want 2; then
say "cell 2: RETR throughput"
for kind in a:r10k b:r4m c:r512; do
    p=${kind%%:*} src=${kind#*:}
    put "$src" ${p}0 ${p}1 ${p}2 ${p}3
    for srv in poplar dovecot; do warm "$srv" ${p}0 ${p}1 ${p}2 ${p}3; done
    for c in 1 4; do
        for _ in $(seq "$REPEAT"); do
            for srv in poplar dovecot; do
                out=$(lg retr --addr "$(addr_of $srv)" --prefix $p --clients $c --seconds "$SECS")
                add $srv "$src-$c" "$(kv mb_per_s <<<"$out")"
                add $srv "$src-$c-msgs" "$(kv messages <<<"$out")"
                add $srv "$src-$c-cut" "$(kv cut <<<"$out")"
            done
        done
        out=$(lg ceiling-retr --addr "$PP" --prefix $p --clients $c --seconds "$SECS" --repeat "$REPEAT")
        for v in $(kv mb_per_s <<<"$out"); do add ceiling "$src-$c" "$v"; done
    done
    drop ${p}0 ${p}1 ${p}2 ${p}3
done
fi

if want 3; then
say "cell 3: PASS to STAT on $((100000 / SCALE)) messages"
for _ in $(seq "$REPEAT"); do
    put big100k big
    for srv in poplar dovecot; do
        out=$(lg login --addr "$(addr_of $srv)" --user big --repeat 1 --root "$(root_of $srv)")
        add $srv first "$(kv login_ms <<<"$out")"
        add $srv first_read "$(kv read_kib <<<"$out")"
        out=$(lg login --addr "$(addr_of $srv)" --user big --repeat 1 --root "$(root_of $srv)")
        add $srv again "$(kv login_ms <<<"$out")"
        add $srv again_read "$(kv read_kib <<<"$out")"
    done
done
drop big
fi

if want 4; then
say "cell 4: 100, 500 and 1000 idle logged-in sessions"
put idle $(seq -f 'i%g' 0 999)
for n in 100 500 1000; do
    for srv in poplar dovecot; do
        out=$(lg idle --addr "$(addr_of $srv)" --prefix i --count $n --root "$(root_of $srv)")
        pss=$(kv pss_kib <<<"$out") base=$(kv base_pss_kib <<<"$out")
        add $srv "pss$n" "$pss"
        add $srv "rss$n" "$(kv rss_kib <<<"$out")"
        add $srv "per$n" "$(awk -v p="$pss" -v b="$base" -v n=$n 'BEGIN { printf "%.1f", (p - b) / n }')"
        add $srv "procs$n" "$(kv procs <<<"$out")"
    done
    # Let the sessions just closed end (and Dovecot reap its processes) before the next count.
    sleep 1
done
drop $(seq -f 'i%g' 0 999)
fi

if want 5; then
say "cell 5: QUIT deleting from a $((1024 / SCALE)) MiB mbox"
put g1 g
for srv in poplar dovecot; do
    warm "$srv" g
    for _ in $(seq "$REPEAT"); do
        out=$(lg quit --addr "$(addr_of $srv)" --user g --dele last --root "$(root_of $srv)")
        add $srv last_ms "$(kv quit_ms <<<"$out")"
        add $srv last_login "$(kv login_ms <<<"$out")"
        add $srv last_w "$(kv wchar <<<"$out")"
        add $srv last_wb "$(kv write_bytes <<<"$out")"
    done
    out=$(lg quit --addr "$(addr_of $srv)" --user g --dele all --root "$(root_of $srv)")
    add $srv all_ms "$(kv quit_ms <<<"$out")"
    add $srv all_w "$(kv wchar <<<"$out")"
    add $srv all_wb "$(kv write_bytes <<<"$out")"
done
drop g
fi

# ---- the table --------------------------------------------------------------------------
# med SERVER CELL: the median of that cell's repeats (login lists may hold several values).
med() { tr ' ,' '\n\n' <<<"${R[$1|$2]:-}" | { grep . || true; } | sort -g | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "-")}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
row() { # label cell unit [ceiling?]
    local p d c=""
    p=$(med poplar "$2") d=$(med dovecot "$2")
    [ "${4:-}" = ceil ] && c=$(med ceiling "$2")
    printf '%-44s %12s %12s %8s %12s\n' "$1 ($3)" "$p" "$d" "$(ratio "$p" "$d")" "$c"
}
# bare_row label cell unit: poplar against the bare reference server.
bare_row() {
    local p b
    p=$(med poplar "$2") b=$(med bare "$2")
    printf '%-44s %12s %12s %8s\n' "$1 ($3)" "$p" "$b" "$(ratio "$p" "$b")"
}
kib2mib() { awk -v k="$1" 'BEGIN { if (k == "-") print "-"; else printf "%.1f", k / 1024 }'; }

echo
echo "poplar $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?') vs $DV_VERSION;" \
    "$(nproc) cores; median of $REPEAT; scale 1/$SCALE; $((SECONDS - T0)) s; $(date -u +%FT%TZ)"
printf '%-44s %12s %12s %8s %12s\n' "cell" "${FIRST##*-}" "${OTHER##*-}" "ratio" "ceiling"
for c in 1 16 64; do row "sessions/s, $c clients" "rate$c" "1/s" ceil; done
for c in 1 16 64; do row "session p99, $c clients" "p99_$c" "ms" ceil; done
for c in 1 16 64; do row "session errors, $c clients" "err$c" "n"; done
for src in r10k r4m r512; do
    for c in 1 4; do row "RETR $src, $c client(s)" "$src-$c" "MB/s" ceil; done
done
row "PASS->STAT, first login" first "ms"
row "PASS->STAT, repeat login" again "ms"
row "  file bytes read, repeat login" again_read "KiB"
for n in 100 500 1000; do
    for srv in poplar dovecot; do
        R[$srv|pss_mib$n]=$(kib2mib "$(med $srv pss$n)") R[$srv|rss_mib$n]=$(kib2mib "$(med $srv rss$n)")
    done
    row "$n idle sessions, PSS" pss_mib$n "MiB"
    row "  PSS per session, over the idle server" per$n "KiB"
    row "  RSS" rss_mib$n "MiB"
    row "  processes" procs$n "n"
done
row "QUIT deleting last message" last_ms "ms"
row "  login before it" last_login "ms"
row "  bytes written (wchar)" last_w "B"
row "  bytes written (write_bytes)" last_wb "B"
row "QUIT deleting all messages" all_ms "ms"
row "  bytes written (wchar)" all_w "B"
row "  bytes written (write_bytes)" all_wb "B"
printf '%-44s %12s %12s %8s\n' "against the bare reference" "${FIRST##*-}" "bare" "ratio"
for c in 1 16 64; do bare_row "sessions/s, $c clients" "rate$c" "1/s"; done
for c in 1 16 64; do bare_row "session errors, $c clients" "err$c" "n"; done
echo "complete RETRs per run, poplar/$OTHER, 1 and 4 clients (each one's octets checked against LIST):"
for s in r10k r4m r512; do
    for c in 1 4; do
        printf '  %s x%s: %s/%s' $s $c "$(med poplar $s-$c-msgs)" "$(med dovecot $s-$c-msgs)"
        [ "$(med dovecot $s-$c-cut)" = 1 ] && printf ' (%s cut at the time cap)' "$OTHER"
        [ "$(med poplar $s-$c-cut)" = 1 ] && printf ' (poplar cut at the time cap)'
    done
    echo
done
