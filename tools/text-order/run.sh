#!/usr/bin/env bash
# Regenerates tools/text-order/order.txt, the order of the release binary's code (README,
# Benchmarks: idle RSS). It lists the functions `tokend serve` runs, in the order they first
# run: start-up, a restart and a second of idle first, then what the hot path runs (`cargo
# bench --bench acquire`), then logins (`cargo bench --bench footprint`). build.rs hands the
# file to the linker (`--symbol-ordering-file`), which puts these functions first in `.text`:
# the code a running daemon uses sits on a few pages instead of being spread over all of
# them. Functions not named (new code, renamed generics) keep the linker's own order, so a
# stale list costs memory, never correctness; run this again after large changes, twice (a
# trace misses functions entered from a page that was open; the next build moves them away
# from their neighbours and the next run sees them: order.py keeps the names the old list had
# and puts the ones seen first). Each run rebuilds the release binary (build.rs reads the list).
#
# Needs cc, python3, readelf and nm; TOKEND_TEST_REDIS_URL for the Redis half of the hot path.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=$PWD/tools/text-order
target=${CARGO_TARGET_DIR:-$PWD/target}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cc -O2 -shared -fPIC -o "$work/trace.so" "$here/trace.c"
# The benches run the binary built by their profile (bench, which is release).
cargo bench --no-run --bench acquire --bench footprint
bin=$(realpath "$target/release/tokend")

# 1. Start (the database is created), restart, /healthz, a second of idle.
cat > "$work/tokend.toml" <<'TOML'
[server]
listen = "127.0.0.1:0"
[cache]
background_refresh = false
[[sites]]
name = "court_zxfw"
driver = "http"
login_url = "http://127.0.0.1:9/login"
TOML
idle_run() {
    (cd "$work" && TOKEND_SECRET_KEY=MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE= \
        PAGE_TRACE_EXE="$bin" PAGE_TRACE_OUT="$work/idle.trace" LD_PRELOAD="$work/trace.so" \
        "$bin" serve --config "$work/tokend.toml" 2>"$work/log$1" & echo $! >"$work/pid")
    local addr=""
    for _ in $(seq 1 500); do
        addr=$(sed -n 's/.*event=listening addr=\([^ ]*\).*/\1/p' "$work/log$1" 2>/dev/null)
        [ -n "$addr" ] && break
        sleep 0.02
    done
    exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}"
    printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3
    cat <&3 >/dev/null
    exec 3<&-
    sleep 1
    kill -TERM "$(cat "$work/pid")"
    while kill -0 "$(cat "$work/pid")" 2>/dev/null; do sleep 0.05; done
}
idle_run 1
idle_run 2

# 2. The hot path (memory and Redis), 3. logins: the benches, with the daemons they start traced
# (trace.c traces `tokend serve` only: the accounts the footprint bench imports are not).
for bench in acquire footprint; do
    PAGE_TRACE_EXE="$bin" PAGE_TRACE_OUT="$work/$bench.trace" LD_PRELOAD="$work/trace.so" \
        cargo bench --bench "$bench"
done

python3 "$here/order.py" "$bin" "$here/order.txt" "$work/idle.trace" "$work/acquire.trace" \
    "$work/footprint.trace"
