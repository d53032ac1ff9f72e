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

# Ports: our relay takes 4 a call, rtpengine up to 8 (consecutive pairs);
# the kernel's ephemeral range overlaps, so leave slack.
PORTS=${PORTS:-48000 63999}
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
		read -r pmin pmax <<<"$PORTS"
		gen "direct-$n" -direct -calls "$n"
		for r in $RELAYS; do
			if [ "$r" = rtpengine ]; then
				start "$OUT/rtpengine.log" rtpengine --config-file=none --foreground --log-stderr --log-level=4 \
					--table=-1 --interface=127.0.0.1 --listen-ng="$RTPE_NG" --port-min="$pmin" --port-max="$pmax" \
					--num-threads=2 --timeout=60 --delete-delay=0
				gen "rtpengine-$n" -ng "$RTPE_NG" -relay-pid "$RP" -calls "$n"
			else
				start "$OUT/relay-$r.log" "$BIN" -mode relay -kernel "$r" -ng "$NG" -port-min "$pmin" -port-max "$pmax" -max-life 10m
				gen "kernel-$r-$n" -ng "$NG" -relay-pid "$RP" -calls "$n"
				# With kernel.bpf_stats_enabled=1: the program's own time per run.
				cat /proc/"$RP"/fdinfo/* 2>/dev/null | awk -v l="kernel-$r-$n" \
					'/^run_time_ns/{t+=$2} /^run_cnt/{c+=$2} END{if (c) printf "%s bpf_runs=%d bpf_ns_per_run=%.0f\n", l, c, t/c}'
			fi
			stop
		done
	done
done
echo "logs: $OUT"
