# ci/bench-lib.sh — shell functions the benchmarks share (sourced, not run): ports, waiting
# for a peer, CPU and memory of a process tree, medians. Needs RUN_DIR and SERVER_PID set by
# the caller where a function says so.

now() { date +%s.%N; }

# Whether something listens on TCP port $1 (read from /proc/net/tcp{,6}, without connecting).
listening() {
    local hex
    hex=$(printf '%04X' "$1")
    awk -v p=":$hex" '$2 ~ p"$" && $4 == "0A" { found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
# Whether any TCP socket, in any state, has $1 as its local port.
bound() {
    local hex
    hex=$(printf '%04X' "$1")
    awk -v p=":$hex" '$2 ~ p"$" { found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
# A TCP port no socket uses and not handed out before in this run, below the kernel's
# ephemeral range (32768-60999), so that no outgoing connection takes it before its listener
# binds it. The ports handed out go to a file (free_port runs in subshells).
BENCH_PORTS_FILE=${BENCH_PORTS_FILE:-$(mktemp -t medgate-bench-ports.XXXXXX)}
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000))
        bound "$p" && continue
        grep -qx "$p" "$BENCH_PORTS_FILE" 2>/dev/null && continue
        echo "$p" >>"$BENCH_PORTS_FILE"
        echo "$p"
        return
    done
}
wait_port() { # PORT PID
    local i
    for i in $(seq 1 600); do
        listening "$1" && return 0
        kill -0 "$2" 2>/dev/null || { echo "process $2 exited before listening on $1" >&2; return 1; }
        sleep 0.05
    done
    echo "nothing listens on $1 after 30 s" >&2
    return 1
}
wait_http() { # URL PID
    local i
    for i in $(seq 1 1200); do
        curl --noproxy '*' -sf -o /dev/null "$1" && return 0
        kill -0 "$2" 2>/dev/null || { echo "process $2 exited before answering $1" >&2; return 1; }
        sleep 0.05
    done
    echo "$1 did not answer in 60 s" >&2
    return 1
}
# The children of PID not reaped yet (alive or zombie), over all its threads.
children() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }
# CPU time of PID and its children in ms (USER_HZ = 100): utime+stime+cutime+cstime of PID
# (cutime/cstime: children it reaped) plus utime+stime of each child it has not reaped.
cpu_ms() {
    local kids
    kids=$(children "$1")
    {
        sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 + $14 + $15 }'
        for c in $kids; do
            sed 's/^.*) //' "/proc/$c/stat" 2>/dev/null | awk '{ print $12 + $13 }' || true
        done
    } | awk '{ t += $1 } END { print t * 10 }'
}
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

# Stops the process SERVER_PID (TERM, then KILL after 30 s) and clears SERVER_PID.
stop_server() {
    if [[ -n ${SERVER_PID:-} ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 600); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}

median() { # values...
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
minmax() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { a = $1 } { b = $1 } END { printf "%.0f-%.0f", a, b }'; }
ratio() { # A B: A / B as "1.23x", "-" without B
    if [[ -n ${2:-} ]]; then awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; else echo "-"; fi
}

# wait_warm STATUS_PORT SECS: waits at most SECS (0: not at all) until an appliance has written
# through its ready spool segments (spool.warm_mib), as an idle appliance has them between
# exams: none of them left cold, at least one warm.
wait_warm() {
    local status=$1 secs=$2 deadline m
    ((secs > 0)) || return 0
    deadline=$((SECONDS + secs))
    while ((SECONDS < deadline)); do
        m=$(curl --noproxy '*' -sf "http://127.0.0.1:$status/metrics" || true)
        if grep -q '^medgate_spool_segments{state="ready_cold"} 0$' <<<"$m" &&
            ! grep -q '^medgate_spool_segments{state="ready_warm"} 0$' <<<"$m" &&
            grep -q '^medgate_spool_segments{state="ready_warm"}' <<<"$m"; then
            return 0
        fi
        sleep 0.2
    done
}
