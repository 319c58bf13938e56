#!/bin/sh
# bench/crosscheck.sh - is kettle-bench's requests/s right? Measure the same
# servers with kettle-bench and redis-benchmark, 50 connections each, and
# print the two side by side (they should agree within 15%).
#
#   bench/crosscheck.sh                       # starts redis-server, and kettled if built
#   bench/crosscheck.sh --redis-port 6379     # use a running redis-server instead
#   bench/crosscheck.sh --kettled-port 7379   # use a running kettled instead
#   bench/crosscheck.sh --requests 200000 --rounds 5 --pipeline 16
#
# Options:
#   --builddir DIR        where kettle-bench and kettled are (default
#                         $KETTLE_BUILDDIR, else ./build, else .)
#   --kettle-bench PATH   the kettle-bench to use (default DIR/kettle-bench)
#   --kettled PATH        the kettled to start (default DIR/kettled; skipped if absent)
#   --redis-benchmark PATH, --redis-server PATH
#   --redis-port P        measure this redis-server rather than starting one
#                         (keys 0..999 must hold their numbers for kettle-bench's checks)
#   --kettled-port P      measure this kettled rather than starting one
#   --target NAME:PORT    also measure this server (repeatable), e.g. a kettle-db
#   --connections N       (default 50)   --pipeline N (default 1)
#   --requests N          per run (default 100000)   --rounds N (default 3)
#   --no-validate         kettle-bench without reply checks (other data sets)
#   --pin                 servers started here on CPU 0, the clients on the other
#                         CPUs (taskset), so that on a small machine a client's
#                         own CPU cost does not slow the server it measures
#
# Servers this script starts listen on free loopback ports and are stopped
# at exit. Runs alternate between the two tools so that drift on a busy
# machine hits both; the table shows medians, the server's own count of
# the commands kettle-bench sent (INFO), and each client's CPU time per
# request: on a machine with few cores the clients share the CPUs with the
# server, and the cheaper client leaves it more. A benchmark, not a test:
# the exit status is 0 unless something could not run.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
builddir=${KETTLE_BUILDDIR:-}
kbench= kettled= rbench=redis-benchmark rserver=redis-server
redis_port= kettled_port= extra=
conns=50 pipeline=1 requests=100000 rounds=3 validate= pin=

while [ $# -gt 0 ]; do
    case $1 in
    --builddir) builddir=$2; shift ;;
    --kettle-bench) kbench=$2; shift ;;
    --kettled) kettled=$2; shift ;;
    --redis-benchmark) rbench=$2; shift ;;
    --redis-server) rserver=$2; shift ;;
    --redis-port) redis_port=$2; shift ;;
    --kettled-port) kettled_port=$2; shift ;;
    --target) extra="$extra $2"; shift ;;
    --connections) conns=$2; shift ;;
    --pipeline) pipeline=$2; shift ;;
    --requests) requests=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --no-validate) validate=--no-validate ;;
    --pin) pin=1 ;;
    -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "crosscheck: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ -z "$builddir" ]; then
    for d in "$top/build" "."; do
        if [ -x "$d/kettle-bench" ]; then builddir=$d; break; fi
    done
fi
[ -n "$kbench" ] || kbench=${builddir:-.}/kettle-bench
[ -n "$kettled" ] || kettled=${builddir:-.}/kettled
[ -x "$kbench" ] || { echo "crosscheck: no kettle-bench at $kbench (build first, or --builddir)" >&2; exit 1; }
command -v "$rbench" >/dev/null || { echo "crosscheck: $rbench not found" >&2; exit 1; }

# --pin: "taskset -c 0" for servers, "taskset -c 1-N" for clients
srv_pin= cli_pin=
if [ -n "$pin" ]; then
    ncpu=$(nproc)
    if [ "$ncpu" -lt 2 ] || ! command -v taskset >/dev/null; then
        echo "crosscheck: --pin needs taskset and 2 CPUs or more" >&2
        exit 1
    fi
    srv_pin="taskset -c 0" cli_pin="taskset -c 1-$((ncpu - 1))"
fi

pids=
tmp=$(mktemp -d)
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for p in $pids; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Wait until something answers PING on port $1.
wait_ping() {
    i=0
    while [ $i -lt 100 ]; do
        if python3 -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)
s.sendall(b"PING\r\n")
sys.exit(0 if s.recv(64).startswith(b"+PONG") else 1)' "$1" 2>/dev/null; then
            return 0
        fi
        i=$((i + 1))
        sleep 0.1
    done
    echo "crosscheck: nothing answers PING on port $1" >&2
    exit 1
}

if [ -z "$redis_port" ]; then
    command -v "$rserver" >/dev/null || { echo "crosscheck: $rserver not found" >&2; exit 1; }
    redis_port=$(free_port)
    $srv_pin "$rserver" --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
        --protected-mode no --daemonize no >"$tmp/redis.log" 2>&1 &
    pids="$pids $!"
    wait_ping "$redis_port"
    # key n holds n, plainly (kettle-bench's keys) and 12-digit padded
    # (redis-benchmark's __rand_int__), for n < 1000
    python3 - "$redis_port" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def cmd(*a):
    return b"*%d\r\n" % len(a) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in a)
out = b"".join(cmd(b"SET", k, str(n).encode()) for n in range(1000)
               for k in (str(n).encode(), b"%012d" % n))
s.sendall(out)
got = b""
while got.count(b"+OK\r\n") < 2000:
    got += s.recv(65536)
EOF
fi

targets="redis-server:$redis_port"
if [ -z "$kettled_port" ] && [ -x "$kettled" ]; then
    kettled_port=$(free_port)
    $srv_pin "$kettled" --listen "127.0.0.1:$kettled_port" --backend "127.0.0.1:$redis_port" \
        >"$tmp/kettled.log" 2>&1 &
    pids="$pids $!"
    wait_ping "$kettled_port"
fi
if [ -n "$kettled_port" ]; then
    targets="$targets kettled:$kettled_port"
else
    echo "crosscheck: no kettled at $kettled (and no --kettled-port): redis-server only" >&2
fi

targets="$targets$extra"

# client CPU (user + system) per request in microseconds, from time(1)'s
# "%U %S" output in $1, appended to $2
cpu_per_req() {
    if [ -s "$1" ]; then
        awk -v n="$requests" 'END { printf "%.1f\n", ($1 + $2) * 1e6 / n }' "$1" >>"$2"
    fi
}
timed() {
    if [ -x /usr/bin/time ]; then /usr/bin/time -f '%U %S' -o "$tmp/cpu" "$@"; else "$@"; fi
}
# requests/s of one run of each tool
run_rb() {
    : >"$tmp/cpu"
    timed $cli_pin "$rbench" -h 127.0.0.1 -p "$1" -c "$conns" -n "$requests" -P "$pipeline" \
        -r 1000 --csv GET __rand_int__ 2>/dev/null | awk -F'","' '/^"GET/ { print $2; exit }'
    cpu_per_req "$tmp/cpu" "$tmp/rb.cpu"
}
run_kb() {
    before=$(server_count "$1")
    : >"$tmp/cpu"
    timed $cli_pin "$kbench" -p "$1" -c "$conns" -n "$requests" -P "$pipeline" -r 1000 --quiet \
        --csv --max-errors 0 $validate -- GET __rand_int__ 2>"$tmp/kb.err" >"$tmp/kb.csv" || true
    cpu_per_req "$tmp/cpu" "$tmp/kb.cpu"
    after=$(server_count "$1")
    awk -F, 'NR == 2 { print $3 }' "$tmp/kb.csv"
    # what kettle-bench says it got answered, and what the server says it
    # served (the INFO call itself is one command)
    done_n=$(awk -F, 'NR == 2 { print $1 }' "$tmp/kb.csv")
    if [ "$before" != "?" ] && [ "$after" != "?" ]; then
        echo "$done_n/$((after - before - 1))" >>"$tmp/counts"
    else
        echo "$done_n/?" >>"$tmp/counts"
    fi
}
# the server's own count of commands (INFO total_commands_processed), or "?"
server_count() {
    python3 - "$1" "$top/tests/integration" <<'PYEOF' 2>/dev/null || echo "?"
import sys
sys.path.insert(0, sys.argv[2])
import harness as h
with h.Client(int(sys.argv[1]), timeout=5) as c:
    print(h.info(c, "stats").get("total_commands_processed", "?").strip())
PYEOF
}
median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "crosscheck: $conns connections, pipeline $pipeline, $requests requests per run," \
     "GET __rand_int__ over 1000 keys, $rounds rounds (medians)${pin:+, servers pinned to CPU 0}"
printf '%-14s %16s %16s %8s\n' target redis-benchmark kettle-bench ratio
for t in $targets; do
    name=${t%%:*} port=${t##*:}
    : >"$tmp/rb" ; : >"$tmp/kb" ; : >"$tmp/counts" ; : >"$tmp/rb.cpu" ; : >"$tmp/kb.cpu"
    r=1
    while [ $r -le "$rounds" ]; do
        # alternate which tool goes first
        if [ $((r % 2)) -eq 1 ]; then
            run_rb "$port" >>"$tmp/rb"; run_kb "$port" >>"$tmp/kb"
        else
            run_kb "$port" >>"$tmp/kb"; run_rb "$port" >>"$tmp/rb"
        fi
        if [ -s "$tmp/kb.err" ] && grep -q "errors (more than" "$tmp/kb.err"; then
            echo "crosscheck: kettle-bench saw errors on $name:" >&2
            cat "$tmp/kb.err" >&2
        fi
        r=$((r + 1))
    done
    rb=$(median <"$tmp/rb") kb=$(median <"$tmp/kb")
    printf '%-14s %16s %16s' "$name" "$rb" "$kb"
    awk -v a="$rb" -v b="$kb" 'BEGIN {
        if (a + 0 > 0 && b + 0 > 0) {
            r = b / a; d = r > 1 ? r - 1 : 1 - r
            printf " %8.3f  %s\n", r, d <= 0.15 ? "agree (within 15%)" : "DIFFER by more than 15%"
        } else print "      n/a" }'
    printf '  per run: redis-benchmark %s; kettle-bench %s\n' "$(tr '\n' ' ' <"$tmp/rb")" \
        "$(tr '\n' ' ' <"$tmp/kb")"
    printf '  kettle-bench answered/server counted, per run: %s\n' "$(tr '\n' ' ' <"$tmp/counts")"
    if [ -s "$tmp/rb.cpu" ]; then
        printf '  client CPU per request (us): redis-benchmark %s; kettle-bench %s\n' \
            "$(median <"$tmp/rb.cpu")" "$(median <"$tmp/kb.cpu")"
    fi
done
