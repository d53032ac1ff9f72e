#!/usr/bin/env bash
# kernel.sh -- machine-wide CPU of RTP forwarding: the generator alone
# (direct), then back to back for each call count: media.Relay in userspace,
# media.Relay forwarding in the kernel (eBPF), and rtpengine (userspace,
# driven over ng by the same generator). Forwarding in softirq escapes the
# relay's process time, so the figure is /proc/stat busy time of both cores
# minus the direct run's. Needs root (BPF). Bounded in calls and time; only
# the processes started here are stopped, by PID.
#
#   CALLS="1000 2000" DUR=15 ROUNDS=2 cmd/centralino-rtpload/kernel.sh
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
CALLS=${CALLS:-1000 2000}
DUR=${DUR:-15}
ROUNDS=${ROUNDS:-2}
RELAYS=${RELAYS:-off on rtpengine}
NG=${NG:-127.0.0.1:47990}
RTPE_NG=${RTPE_NG:-127.0.0.1:47991}
BASE=${BASE:-47000} # the generator's shared socket
OUT=${OUT:-$(mktemp -d -t kfwd.XXXXXX)}
[ "$DUR" -le 60 ] || { echo "DUR must be <= 60" >&2; exit 2; }
BIN="$OUT/centralino-rtpload"
go build -o "$BIN" ./cmd/centralino-rtpload || exit 1
RP=
cleanup() { [ -n "$RP" ] && kill -TERM "$RP" 2>/dev/null; }
trap cleanup EXIT

# Our relay takes 4 ports a call: 41000- up to 1,000 calls, 48000-57999
# above (a few may be taken by others);
# rtpengine up to 8 (it wants consecutive pairs): 48000-63999.
range() { # CALLS -> "min max"
	if [ "$1" -le 1000 ]; then echo "41000 44999"; else echo "48000 57999"; fi
}
gen() { # LABEL ARGS...
	local label=$1; shift
	echo "# $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg) $label" >>"$OUT/$label.out"
	timeout $((DUR + 90)) taskset -c 1 "$BIN" -mode gen -shared -base-port "$BASE" -duration "${DUR}s" "$@" >>"$OUT/$label.out" 2>&1
	grep '^RESULT' "$OUT/$label.out" | tail -1 | sed "s/^RESULT/$label/"
}
start() { # LOG CMD...
	local log=$1; shift
	taskset -c 0 "$@" >"$log" 2>&1 &
	RP=$!
	sleep 1
	kill -0 "$RP" 2>/dev/null || { cat "$log" >&2; exit 1; }
}
stop() { kill -TERM "$RP"; wait "$RP" 2>/dev/null; RP=; sleep 1; }

for round in $(seq "$ROUNDS"); do
	for n in $CALLS; do
		read -r pmin pmax < <(range "$n")
		gen "direct-$n" -direct -calls "$n"
		for r in $RELAYS; do
			if [ "$r" = rtpengine ]; then
				start "$OUT/rtpengine.log" rtpengine --config-file=none --foreground --log-stderr --log-level=4 \
					--table=-1 --interface=127.0.0.1 --listen-ng="$RTPE_NG" --port-min=48000 --port-max=63999 \
					--num-threads=2 --timeout=60 --delete-delay=0
				gen "rtpengine-$n" -ng "$RTPE_NG" -relay-pid "$RP" -calls "$n"
			else
				start "$OUT/relay-$r.log" "$BIN" -mode relay -kernel "$r" -ng "$NG" -port-min "$pmin" -port-max "$pmax" -max-life 10m
				gen "kernel-$r-$n" -ng "$NG" -relay-pid "$RP" -calls "$n"
			fi
			stop
		done
	done
done
echo "logs: $OUT"
