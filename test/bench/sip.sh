#!/usr/bin/env bash
# SIP load test: REGISTER/s with digest auth and calls/s through a fresh
# `centralino serve`, raised step by step; prints figures, asserts nothing.
# Every sipp run is bounded in count (-m) and time (timeout); loopback only.
#
#   test/bench/sip.sh                 # memory directory
#   DIRECTORY=redis test/bench/sip.sh # a redis-server started for the run
#   REG_RATES="5000 10000 20000" CPS_RATES="500 1000 2000" DUR=10 HOLD_MS=1000 USERS=10000
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
REG_RATES=${REG_RATES:-"5000 10000 15000 20000 25000"}
CPS_RATES=${CPS_RATES:-"250 500 1000 1500 2000 2500 3000"}
DUR=${DUR:-10}
HOLD_MS=${HOLD_MS:-1000}
USERS=${USERS:-10000}
DIRECTORY=${DIRECTORY:-memory}
MAX_FAIL_PCT=${MAX_FAIL_PCT:-0.1}
PIN=${PIN:-1} # switch on CPU 0, sipp on CPU 1
SIP=127.0.0.1:25060 HTTP=127.0.0.1:28080 UAS_PORT=25080

command -v sipp >/dev/null || { echo "sipp missing: apt-get install sip-tester" >&2; exit 1; }
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

go build -o "$WORK/centralino" ./cmd/centralino
REDIS_ARGS=()
if [[ $DIRECTORY == redis ]]; then
	redis-server --port 0 --unixsocket "$WORK/redis.sock" --save "" --appendonly no --daemonize no >"$WORK/redis.log" 2>&1 &
	PIDS+=($!)
	for _ in $(seq 50); do [[ -S $WORK/redis.sock ]] && break; sleep 0.1; done
	REDIS_ARGS=(-redis "unix://$WORK/redis.sock")
fi
go run ./test/bench/genconfig -users "$USERS" -sip "$SIP" -http "$HTTP" "${REDIS_ARGS[@]}" -o "$WORK/bench.yaml"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# sipp and the switch exchange bursts; small default socket buffers drop them.
sysctl -qw net.core.rmem_max=8388608 net.core.wmem_max=8388608 net.core.rmem_default=4194304 2>/dev/null || true

"$WORK/centralino" serve --config "$WORK/bench.yaml" >"$WORK/centralino.log" 2>&1 &
SW=$!
PIDS+=($SW)
for _ in $(seq 100); do curl -sf "http://$HTTP/readyz" >/dev/null && break; sleep 0.1; done
SIPP_CPU=()
if [[ $PIN == 1 ]]; then taskset -a -p 0x1 "$SW" >/dev/null; SIPP_CPU=(taskset 0x2); fi

# field1 carries the whole keyword: sipp expands keywords inside injected fields.
for i in $(seq 1 "$USERS"); do printf 'u%06d;[authentication username=u%06d password=pass-u%06d]\n' "$i" "$i" "$i"; done |
	{ echo SEQUENTIAL; cat; } >"$WORK/users.csv"

ticks() { awk '{print $14+$15}' "/proc/$SW/stat"; }
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$SW/status"; }
hz=$(getconf CLK_TCK)

# step NAME RATE SIPP-ARGS...: run one bounded step, print one line of figures.
step() {
	local name=$1 rate=$2; shift 2
	local count=$((rate * DUR)) t0 t1 c0 c1 out ok fail
	t0=$(date +%s.%N); c0=$(ticks)
	out=$(timeout $((DUR * 4 + 60)) "${SIPP_CPU[@]}" sipp "$SIP" -i 127.0.0.1 -nostdin -r "$rate" -rp 1000 -m "$count" \
		-l $((rate * 4 + 100)) -timeout $((DUR * 3 + 30))s -trace_rtt -rtt_freq 1 -trace_err "$@" 2>&1 || true)
	t1=$(date +%s.%N); c1=$(ticks)
	ok=$(echo "$out" | awk -F'|' '/Successful call/{gsub(/ /,"",$3); print $3}' | tail -1)
	fail=$(echo "$out" | awk -F'|' '/Failed call/{gsub(/ /,"",$3); print $3}' | tail -1)
	ok=${ok:-0} fail=${fail:-$count}
	local rttfile p99
	rttfile=$(ls -t ./*_rtt.csv 2>/dev/null | head -1 || true)
	p99=$(if [[ -n $rttfile ]]; then awk -F';' 'NR>1 && $NF!="" {print $(NF-1)}' "$rttfile" | sort -n | awk '{a[NR]=$1} END{i=int(NR*0.99); if(i<1)i=1; if(NR) printf "%.1f", a[i]; else print "-"}'; else echo -; fi)
	[[ -n ${KEEP_ERRORS:-} ]] && cat ./*_errors.log 2>/dev/null | head -${KEEP_ERRORS} >&2
	rm -f ./*_rtt.csv ./*_errors.log
	awk -v n="$name" -v r="$rate" -v ok="$ok" -v f="$fail" -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" -v hz="$hz" -v p99="$p99" -v rss="$(rss_kb)" -v max="$MAX_FAIL_PCT" 'BEGIN{
		el=t1-t0; tot=ok+f; fp=tot?100*f/tot:100; cpu=100*(c1-c0)/hz/el; ach=ok/el;
		if (ach > r) ach = r;
		pass=(fp<max && ok>=0.95*r*'"$DUR"')?"pass":"FAIL";
		printf "%-9s target %6d/s  done %7d  failed %5d (%.3f%%)  %-4s  p99 %6s ms  switch CPU %5.1f%%  RSS %6.1f MB\n", n, r, ok, f, fp, pass, p99, cpu, rss/1024 }'
}

echo "== centralino $(git rev-parse --short HEAD 2>/dev/null), directory=$DIRECTORY, users=$USERS, $(nproc) CPUs, pinned=$PIN"
cd "$WORK"
rss0=$(rss_kb)
for r in $REG_RATES; do
	step register "$r" -sf "$ROOT/test/bench/scenarios/register.xml" -inf "$WORK/users.csv" || true
done
bindings=$(curl -s "http://$HTTP/metrics" | awk '/^centralino_registrar_bindings\{transport="udp"\}/{print $2}')
echo "registered contacts: $bindings; RSS grew $(( ($(rss_kb) - rss0) )) kB: $(awk -v d=$(( $(rss_kb) - rss0 )) -v n="${bindings:-1}" 'BEGIN{printf "%.0f", d*1024/(n>0?n:1)}') bytes per contact"

"${SIPP_CPU[@]}" sipp "$SIP" -i 127.0.0.1 -p "$UAS_PORT" -sf "$ROOT/test/e2e/scenarios/uas.xml" -nostdin -bg >/dev/null 2>&1 || true
sleep 0.5
timeout 20 sipp "$SIP" -i 127.0.0.1 -nostdin -m 1 -sf "$ROOT/test/e2e/scenarios/register.xml" -au uas -ap pass-uas -key aor uas -key binding "127.0.0.1:$UAS_PORT" >/dev/null
for r in $CPS_RATES; do
	step call "$r" -sf "$ROOT/test/bench/scenarios/uac.xml" -s uas -d "$HOLD_MS" || true
done
pkill -f "sipp $SIP -i 127.0.0.1 -p $UAS_PORT" || true
