#!/usr/bin/env bash
# run.sh -- the relay in its own process pinned to one core, the generator
# pinned to the other, for N in CALLS (paced) and UNPACED_CALLS (unpaced),
# plain and with SRTP on one leg; plus the generator's own floor (-direct).
# Every step is bounded in calls and time; only the relay started here is
# stopped, by PID.
#
#   cmd/centralino-rtpload/run.sh
#   CALLS="1000" DUR=10 SRTP="0" cmd/centralino-rtpload/run.sh
#
# Environment: CALLS ["500 1000 2000 4000"], UNPACED_CALLS [100], DUR [20],
# SRTP ["0 1"], MUX [true], RELAY_CPUS [0], GEN_CPUS [1], NG [127.0.0.1:2224],
# RELAY_ENV (e.g. "GOGC=400"), GEN_FLAGS [-shared] (empty: a socket per phone),
# OUT [mktemp -d].
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
CALLS=${CALLS:-500 1000 2000 4000}
UNPACED_CALLS=${UNPACED_CALLS-100}
DUR=${DUR:-20}
SRTP=${SRTP:-0 1}
MUX=${MUX:-true}
RELAY_CPUS=${RELAY_CPUS:-0}
GEN_CPUS=${GEN_CPUS:-1}
NG=${NG:-127.0.0.1:2224}
RELAY_ENV=${RELAY_ENV:-}
GEN_FLAGS=${GEN_FLAGS--shared}
OUT=${OUT:-$(mktemp -d -t rtpload.XXXXXX)}
[ "$DUR" -le 120 ] || { echo "DUR must be <= 120" >&2; exit 2; }
BIN="$OUT/centralino-rtpload"
go build -o "$BIN" ./cmd/centralino-rtpload || exit 1

RP=
cleanup() { [ -n "$RP" ] && kill -TERM "$RP" 2>/dev/null; }
trap cleanup EXIT

# wait_quiet: up to QUIET_WAIT seconds for 2 s in which the machine is
# at most QUIET_PCT % busy (other engineers compile and run tests here).
QUIET_WAIT=${QUIET_WAIT:-90}
QUIET_PCT=${QUIET_PCT:-15}
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
wait_quiet() {
	local end=$((SECONDS + QUIET_WAIT)) b0 t0 b1 t1
	while [ $SECONDS -lt $end ]; do
		read -r b0 t0 < <(busy); sleep 2; read -r b1 t1 < <(busy)
		[ $(((b1 - b0) * 100 / (t1 - t0 + 1))) -le "$QUIET_PCT" ] && return 0
	done
	echo "# not quiet after ${QUIET_WAIT}s, measuring anyway" >&2
}

step() { # LABEL ARGS...
	local label=$1; shift
	local f="$OUT/$label.out"
	wait_quiet
	echo "# $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) $label" | tee "$f"
	timeout $((DUR + 120)) taskset -c "$GEN_CPUS" "$BIN" -mode gen -duration "${DUR}s" -mux="$MUX" $GEN_FLAGS "$@" >>"$f" 2>&1
	grep -E '^(RESULT|setup)' "$f" | sed "s/^/$label /"
	sleep 1
}

for n in $CALLS; do step "direct-$n" -direct -calls "$n"; done
# A fresh relay per step, so its RSS growth is that step's calls.
relay_start() { # LOG
	env $RELAY_ENV taskset -c "$RELAY_CPUS" "$BIN" -mode relay -ng "$NG" -max-life 30m >"$1" 2>&1 &
	RP=$!
	for _ in $(seq 1 50); do grep -q ready "$1" && break; sleep 0.1; done
	grep -q ready "$1" || { cat "$1" >&2; exit 1; }
}
relay_stop() { kill -TERM "$RP"; wait "$RP" 2>/dev/null; RP=; }

for srtp in $SRTP; do
	flags=(-ng "$NG")
	[ "$srtp" = 1 ] && flags+=(-srtp)
	for n in $CALLS; do
		relay_start "$OUT/relay-srtp$srtp-$n.log"
		step "relay-srtp$srtp-$n" "${flags[@]}" -relay-pid "$RP" -calls "$n"
		relay_stop
	done
	for n in $UNPACED_CALLS; do
		relay_start "$OUT/relay-srtp$srtp-unpaced-$n.log"
		step "relay-srtp$srtp-unpaced-$n" "${flags[@]}" -relay-pid "$RP" -calls "$n" -unpaced
		relay_stop
	done
done
echo "logs: $OUT"
