#!/usr/bin/env bash
# SIP load test: REGISTER/s with digest auth and calls/s through a fresh
# `centralino serve`, raised step by step; prints figures, asserts nothing.
# Every sipp run is bounded in count (-m) and time (timeout, -timeout);
# loopback only; only the processes this script started are stopped (by PID).
#
#   test/bench/sip.sh                 # memory directory
#   DIRECTORY=redis test/bench/sip.sh # a redis-server (unix socket) started for the run
#   REV=HEAD test/bench/sip.sh        # build a committed revision, not the working tree
#   REG_RATES="5000 10000 20000" CPS_RATES="500 1000 2000" DUR=10 HOLD_MS=1000 USERS=10000
#   TESTS="mem reg cps"               # which phases run
#   PROFILE="register:10000 call:1500" # 10 s CPU profiles during those steps (→ $OUT)
#   WRITE_BACK=0s                     # directory.write_back on Redis (default: the config default)
#   OUT=dir                           # keep logs, sipp stat files and profiles there
#   MEDIA_ANCHOR=always MEDIA_PORTS=50000-64999 # anchor media (default never: SIP only)
#   TRACE=1                           # sipp -trace_msg for the UAC and the UAS (low rates only)
#   KEEP_ERRORS=40                    # print the first lines of sipp's error logs
#   PERF=1                            # also count the switch's system calls, context switches, page faults and allocations per operation
#                                     # per operation (perf stat; counts, unlike CPU time, hold on a
#                                     # noisy machine)
#
# Phases:
#   mem  heap in use (after a forced GC) before and after registering USERS
#        users once, once the registrar has forgotten the answers it keeps
#        for retransmissions (32 s, swept every 8 s): bytes per contact.
#   reg  REGISTER with digest auth (401 then 200), users cycled SEQUENTIALly.
#   cps  INVITE → 180 → 200 → ACK → hold HOLD_MS → BYE → 200 to user "uas",
#        answered by a sipp UAS registered as "uas".
# A step passes when failed+missing calls < MAX_FAIL_PCT % of the target count
# and the achieved rate is ≥ 95 % of the target. A ramp stops after
# STOP_AFTER_FAILS failing steps in a row.
#
# Columns: achieved = successful / (time of the sending phase + the tail of the
# last call); p99 = 99th percentile of sipp's response-time sample (REGISTER:
# first REGISTER → 200, i.e. both round trips; call: INVITE → 200); CPU = % of
# one core used by the switch during the steady part of the step (from /proc);
# µs/op = switch CPU time over the whole step divided by successful operations;
# load = 1-minute load average when the step ended; sipp = CPU (% of one core)
# of the load-generating sipp during the steady part of the step; redis = the
# same for redis-server (it shares CPU 1 with sipp); others = CPU (% of one core)
# used by processes other than the switch, sipp and redis during the steady
# part of the step (kernel threads such as ksoftirqd included): other engineers
# share the machine, re-run steps where it is high.
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
STOP_AFTER_FAILS=${STOP_AFTER_FAILS:-2}
TESTS=${TESTS:-"mem reg cps"}
PIN=${PIN:-1} # switch on CPU 0, sipp (and redis) on CPU 1
REV=${REV:-}
PROFILE=${PROFILE:-}
UAS_SCENARIO=${UAS_SCENARIO:-$ROOT/test/bench/scenarios/uas.xml}
SIP=${SIP:-127.0.0.1:25060} HTTP=${HTTP:-127.0.0.1:28080} UAS_PORT=${UAS_PORT:-25080} UAC_PORT=${UAC_PORT:-25061}
(( DUR <= 120 )) || { echo "DUR must be <= 120" >&2; exit 2; }

command -v sipp >/dev/null || { echo "sipp missing: apt-get install sip-tester" >&2; exit 1; }
[[ -z ${PERF:-} ]] || command -v perf >/dev/null || { echo "PERF=1 needs perf: apt-get install linux-perf" >&2; exit 1; }
WORK=$(mktemp -d)
OUT=${OUT:-$WORK/out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PIDS=()
SYSCTL_SAVED=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	for p in "${SYSCTL_SAVED[@]}"; do sysctl -qw "$p" 2>/dev/null || true; done
	cp "$WORK/centralino.log" "$OUT/" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Build: the working tree, or a clean snapshot of REV (others may be editing the tree).
SRC=$ROOT
if [[ -n $REV ]]; then
	SRC=$WORK/src
	mkdir -p "$SRC"
	git -C "$ROOT" archive "$REV" | tar -x -C "$SRC"
	# the bench's own config generator is taken from this checkout
	rm -rf "$SRC/test/bench/genconfig" && mkdir -p "$SRC/test/bench" && cp -r "$ROOT/test/bench/genconfig" "$SRC/test/bench/"
fi
DESC=$(git -C "$ROOT" rev-parse --short "${REV:-HEAD}")
[[ -z $REV && -n $(git -C "$ROOT" status --porcelain -- cmd sip media routing modules configs go.mod 2>/dev/null) ]] && DESC="$DESC+dirty"
(cd "$SRC" && go build -o "$WORK/centralino" ./cmd/centralino && go build -o "$WORK/genconfig" ./test/bench/genconfig)

CPU_SW=() CPU_LG=()
if [[ $PIN == 1 ]]; then CPU_SW=(taskset -c 0); CPU_LG=(taskset -c 1); fi

REDIS_ARGS=() REDIS_PID=
if [[ $DIRECTORY == redis ]]; then
	command -v redis-server >/dev/null || { echo "redis-server missing: apt-get install redis-server" >&2; exit 1; }
	"${CPU_LG[@]}" redis-server --port 0 --unixsocket "$WORK/redis.sock" --save "" --appendonly no --daemonize no >"$WORK/redis.log" 2>&1 &
	REDIS_PID=$!
	PIDS+=("$REDIS_PID")
	for _ in $(seq 50); do [[ -S $WORK/redis.sock ]] && break; sleep 0.1; done
	REDIS_ARGS=(-redis "unix://$WORK/redis.sock")
fi
# Media: the config default anchors calls through the relay. Its default port
# range (30000-49999) is also the one of rtpengine and of the media load test
# that others run on this machine ("media: no free relay port" -> 500), so the
# bench uses its own, wider range (4 ports a call: 10,000 ports cap 1 s calls
# at 2,500/s). By default (MEDIA_ANCHOR=never) the bench measures SIP alone,
# as the Kamailio harness does (no rtpengine there); MEDIA_ANCHOR=always adds
# the relay's port allocation and release to every call.
"$WORK/genconfig" -users "$USERS" -sip "$SIP" -http "$HTTP" "${REDIS_ARGS[@]}" \
	-media-ports "${MEDIA_PORTS:-50000-64999}" -media-anchor "${MEDIA_ANCHOR:-never}" ${MEDIA_KERNEL:+-media-kernel "$MEDIA_KERNEL"} \
	${MAX_CALL_RATE:+-max-call-rate "$MAX_CALL_RATE"} ${WRITE_BACK:+-write-back "$WRITE_BACK"} \
	-o "$WORK/bench.yaml"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# The switch asks for 4 MB SIP UDP socket buffers, which Linux caps at
# net.core.rmem_max/wmem_max unless the switch runs with CAP_NET_ADMIN; sipp
# (-buff_size) is capped the same way. Raise the caps for the run (restored
# on exit); rmem_default also sizes the sockets of the sipp UAS.
for kv in net.core.rmem_max=8388608 net.core.wmem_max=8388608 net.core.rmem_default=4194304 net.core.wmem_default=1048576; do
	k=${kv%=*}
	v=$(sysctl -n "$k" 2>/dev/null) && SYSCTL_SAVED+=("$k=$v") && sysctl -qw "$kv" 2>/dev/null || true
done

SW=
# Others run switches on this machine too: a port already taken would make
# the figures those of someone else's process (it answers /readyz).
port_taken() { [[ -n $(ss -Hln "sport = :${1##*:}" 2>/dev/null) ]]; }
start_switch() {
	if [[ -n $SW ]]; then kill "$SW" 2>/dev/null || true; wait "$SW" 2>/dev/null || true; fi
	for a in "$SIP" "$HTTP"; do
		port_taken "$a" && { echo "port of $a already taken (another switch?); set SIP=/HTTP=" >&2; ss -Hlnp "sport = :${a##*:}" >&2; exit 1; }
	done
	"${CPU_SW[@]}" "$WORK/centralino" serve --config "$WORK/bench.yaml" >>"$WORK/centralino.log" 2>&1 &
	SW=$!
	PIDS+=("$SW")
	for _ in $(seq 100); do curl -sf "http://$HTTP/readyz" >/dev/null && break; sleep 0.1; done
	curl -sf "http://$HTTP/readyz" >/dev/null && kill -0 "$SW" 2>/dev/null || { echo "switch not ready" >&2; cat "$WORK/centralino.log" >&2; exit 1; }
}
start_switch

# field1 carries the whole keyword: sipp expands keywords inside injected fields.
for i in $(seq 1 "$USERS"); do printf 'u%06d;[authentication username=u%06d password=pass-u%06d]\n' "$i" "$i" "$i"; done |
	{ echo SEQUENTIAL; cat; } >"$WORK/users.csv"
printf 'SEQUENTIAL\nuas;[authentication username=uas password=pass-uas]\n' >"$WORK/uas.csv"

hz=$(getconf CLK_TCK)
ticks() { local s=0 p; for p in "$@"; do s=$((s + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12+$13}'))); done; echo $s; }
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$SW/status"; }
load1() { cut -d' ' -f1 /proc/loadavg; }
# user+nice+system ticks of the whole machine: minus ours, what others used.
busy() { awk '/^cpu /{print $2+$3+$4}' /proc/stat; }
UAS_PID=
now() { date +%s.%N; }
metric() { curl -s "http://$HTTP/metrics" | awk -v m="$1" '$1==m{print $2}'; }
# live heap after a forced GC: heap_alloc (bytes of live objects once the GC
# has swept) and heap_inuse (bytes of spans holding at least one live object:
# it also counts fragmentation, so it jumps by whole spans and is noisy).
heap_after_gc() {
	curl -s -o /dev/null "http://$HTTP/debug/pprof/heap?gc=1"; sleep 0.2; curl -s -o /dev/null "http://$HTTP/debug/pprof/heap?gc=1"
	curl -s "http://$HTTP/metrics" | awk '$1=="go_memstats_heap_alloc_bytes"{a=$2} $1=="go_memstats_heap_inuse_bytes"{i=$2} END{printf "%d %d\n", a, i}'
}
statcol() { awk -F';' -v c="$2" 'NR==1{for(i=1;i<=NF;i++)if($i==c)k=i} END{if(k)print $k+0; else print 0}' "$1"; }
SIPP_COMMON=(-i 127.0.0.1 -nostdin -buff_size 8388608)
# sipp binds an RTP socket even without media (default port 6000, which
# other programs on the machine may hold): give each sipp its own.
MP=${MP:-26000}

# p99 of sipp's -trace_rtt file: "Date_ms;response_time_ms;rtd_no" per line
# (with -rtt_freq 1 every sample is written), a header line first.
p99() {
	local f
	f=$(ls "$1"_*_rtt.csv 2>/dev/null | head -1)
	[[ -n $f ]] || { echo -; return; }
	awk -F';' 'NR>1 && $2!="" {print $2}' "$f" | sort -g |
		awk '{a[NR]=$1} END{if(!NR){print "-"; exit} i=int(NR*0.99+0.999); if(i>NR)i=NR; printf "%.1f", a[i]}'
}

# step NAME RATE SIPP-ARGS...: run one bounded step, print one line of figures; fails if the step failed.
step() {
	local name=$1 rate=$2; shift 2
	local count=$((rate * DUR)) tag="$name-$rate" hold=0 prof_pid=
	[[ $name == call ]] && hold=$HOLD_MS
	rm -f "$WORK/$tag"_*
	local t0 c0 ta ca tb cb t1 c1 perf_pid= m0= m1=
	if [[ -n ${PERF:-} ]]; then
		m0="$(metric go_memstats_mallocs_total) $(metric go_memstats_alloc_bytes_total) ${REDIS_PID:+$(ticks "$REDIS_PID")}"
		perf stat -x, -e raw_syscalls:sys_enter,context-switches,page-faults -o "$WORK/$tag.perf" -p "$SW" &
		perf_pid=$!
	fi
	t0=$(now); c0=$(ticks "$SW")
	local ours=("$SW" ${REDIS_PID:+"$REDIS_PID"} ${UAS_PID:+"$UAS_PID"}) oa ob ba bb
	timeout $((DUR * 3 + hold / 1000 + 40)) "${CPU_LG[@]}" sipp "$SIP" "${SIPP_COMMON[@]}" -mp "$MP" -p "$UAC_PORT" -r "$rate" -rp 1000 -m "$count" \
		-l $((rate * (hold / 1000 + 4) + 100)) -timeout $((DUR * 3 + hold / 1000 + 30))s \
		-trace_stat -stf "$WORK/$tag.stat.csv" -fd 1 -trace_rtt -rtt_freq 1 -trace_err -error_file "$WORK/$tag.errors.log" \
		${TRACE:+-trace_msg -message_file "$WORK/$tag.msg.log"} "$@" >"$WORK/$tag.out" 2>&1 &
	local sp=$!
	PIDS+=("$sp")
	sleep 1
	# timeout forks sipp (taskset execs it): its CPU is its child's, not its own.
	local sipp_pid sa sb ra rb
	sipp_pid=$(pgrep -P "$sp" | head -1)
	ta=$(now); ca=$(ticks "$SW"); oa=$(ticks "${ours[@]}" $sipp_pid); ba=$(busy); sa=$(ticks $sipp_pid); ra=$(ticks $REDIS_PID)
	if [[ " $PROFILE " == *" $name:$rate "* ]]; then
		(curl -s -o "$OUT/cpu-$DIRECTORY-$tag.pprof" "http://$HTTP/debug/pprof/profile?seconds=$((DUR > 12 ? 10 : DUR - 2))") &
		prof_pid=$!
	fi
	sleep $((DUR - 2))
	tb=$(now); cb=$(ticks "$SW"); ob=$(ticks "${ours[@]}" $sipp_pid); bb=$(busy); sb=$(ticks $sipp_pid); rb=$(ticks $REDIS_PID)
	wait "$sp" || true
	[[ -n $prof_pid ]] && wait "$prof_pid"
	t1=$(now); c1=$(ticks "$SW")
	if [[ -n $perf_pid ]]; then
		kill -INT "$perf_pid" && wait "$perf_pid" || true
		m1="$(metric go_memstats_mallocs_total) $(metric go_memstats_alloc_bytes_total) ${REDIS_PID:+$(ticks "$REDIS_PID")}"
	fi
	# sipp names the rtt file after the scenario; move it next to the step's files.
	for f in ./*_rtt.csv; do [[ -e $f ]] && mv "$f" "$WORK/$tag""_$(basename "$f")"; done
	local ok fail retr dead el p
	ok=$(statcol "$WORK/$tag.stat.csv" "SuccessfulCall(C)")
	fail=$(statcol "$WORK/$tag.stat.csv" "FailedCall(C)")
	retr=$(statcol "$WORK/$tag.stat.csv" "Retransmissions(C)")
	dead=$(statcol "$WORK/$tag.stat.csv" "DeadCallMsgs(C)")
	# StartTime/CurrentTime are "date<TAB>time<TAB>epoch"; ElapsedTime has 1 s resolution only.
	el=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++){if($i=="StartTime")a=i;if($i=="CurrentTime")b=i}} END{split($a,x,"\t");split($b,y,"\t");printf "%.3f", y[3]-x[3]}' "$WORK/$tag.stat.csv")
	p=$(p99 "$WORK/$tag")
	if [[ -n ${KEEP_ERRORS:-} && -s $WORK/$tag.errors.log ]]; then
		echo "--- first $KEEP_ERRORS lines of sipp's error log for $tag" >&2
		head -"$KEEP_ERRORS" "$WORK/$tag.errors.log" >&2
	fi
	cp "$WORK/$tag".* "$WORK/$tag"_*_rtt.csv "$OUT/" 2>/dev/null || true
	awk -v n="$name" -v r="$rate" -v d="$DUR" -v ok="$ok" -v f="$fail" -v retr="$retr" -v dead="$dead" -v el="$el" -v hold="$hold" \
		-v ta="$ta" -v tb="$tb" -v ca="$ca" -v cb="$cb" -v c0="$c0" -v c1="$c1" -v hz="$hz" -v p99="$p" \
		-v rss="$(rss_kb)" -v max="$MAX_FAIL_PCT" -v load="$(load1)" -v dir="$DIRECTORY" -v other="$(( (bb - ba) - (ob - oa) ))" -v sipp="$((sb - sa))" -v redis="${REDIS_PID:+$((rb - ra))}" 'BEGIN{
		n0=r*d; miss=n0-ok; if (miss<f) miss=f; fp=100*miss/n0;
		span=el-hold/1000; if (span<=0) span=el; ach=(span>0)?ok/span:0;
		cpu=100*(cb-ca)/hz/(tb-ta); us=(ok>0)?1e6*(c1-c0)/hz/ok:0;
		pass=(fp<max && ach>=0.95*r)?"pass":"FAIL";
		oth=100*other/hz/(tb-ta); if (oth<0) oth=0; sp=100*sipp/hz/(tb-ta);
		rd=(redis=="")?"-":sprintf("%.0f%%", 100*redis/hz/(tb-ta));
		printf "%-6s %-8s %6d %8.0f %8d %6d %7.3f%% %6d %-4s %7s %6.1f%% %7.0f %7.1f %5s %5.0f%% %6s %5.0f%%\n", dir, n, r, ach, ok, miss, fp, retr, pass, p99, cpu, us, rss/1024, load, sp, rd, oth
		exit (pass=="pass")?0:1 }' | tee -a "$OUT/summary.txt"
	local res=${PIPESTATUS[0]}
	if [[ -s $WORK/$tag.perf && ${ok:-0} -gt 0 ]]; then
		awk -F, -v ok="$ok" '$3=="raw_syscalls:sys_enter"{s=$1} $3=="context-switches"{c=$1} $3=="page-faults"{f=$1}
			END{printf "       %s/s: %.2f system calls, %.2f context switches and %.2f page faults per operation (perf, whole step)\n", "'"$tag"'", s/ok, c/ok, f/ok}' \
			"$WORK/$tag.perf" | tee -a "$OUT/summary.txt"
		awk -v ok="$ok" -v a="$m0" -v b="$m1" -v hz="$hz" 'BEGIN{split(a,x," "); split(b,y," ")
			printf "       %s/s: %.1f allocations and %.0f bytes allocated per operation (Go runtime, whole step)", "'"$tag"'", (y[1]-x[1])/ok, (y[2]-x[2])/ok
			if (3 in x) printf "; redis-server: %.1f µs of CPU per operation", 1e6*(y[3]-x[3])/hz/ok
			print ""}' |
			tee -a "$OUT/summary.txt"
	fi
	return "$res"
}

header() { printf '%-6s %-8s %6s %8s %8s %6s %8s %6s %-4s %7s %7s %7s %7s %5s %6s %6s %6s\n' dir test target achieved ok failed fail% retr res p99ms CPU us/op RSS_MB load sipp redis others | tee -a "$OUT/summary.txt"; }

echo "== centralino $DESC, directory=$DIRECTORY, users=$USERS, $(nproc) CPUs, pinned=$PIN, DUR=${DUR}s, hold=${HOLD_MS}ms, load $(load1)" | tee -a "$OUT/summary.txt"

if [[ " $TESTS " == *" mem "* ]]; then
	# Three points: idle, USERS/2 registered, USERS registered, each once the
	# answers remembered for retransmissions are gone (Timer J = 64*T1 = 32 s,
	# swept every 8 s) and after a forced GC. The slope between the last two is the cost of one
	# more contact, free of one-off first-use allocations (pools, buffers).
	redis_mem() { redis-cli -s "$WORK/redis.sock" info memory | awk -F: '/^used_memory:/{print $2+0}'; }
	half=$((USERS / 2))
	sed -n "1,$((half + 1))p" "$WORK/users.csv" >"$WORK/users-a.csv"
	{ echo SEQUENTIAL; sed -n "$((half + 2)),\$p" "$WORK/users.csv"; } >"$WORK/users-b.csv"
	H=() I=() N=() M=()
	for part in 0 a b; do
		if [[ $part != 0 ]]; then
			timeout 120 "${CPU_LG[@]}" sipp "$SIP" "${SIPP_COMMON[@]}" -mp $((MP + 200)) -p "$UAC_PORT" -r 2000 -m "$half" -l 4000 -timeout 90s \
				-sf "$ROOT/test/bench/scenarios/register.xml" -inf "$WORK/users-$part.csv" >"$WORK/mem-$part.out" 2>&1 || true
			echo "registered $(metric 'centralino_registrar_bindings{transport="udp"}') contacts; waiting ${MEM_WAIT:-42} s for the remembered answers to go" >&2
			sleep "${MEM_WAIT:-42}"
		fi
		read -r ha hi < <(heap_after_gc)
		H+=("$ha") I+=("$hi") N+=("$(metric 'centralino_registrar_bindings{transport="udp"}')")
		[[ -n $REDIS_PID ]] && M+=("$(redis_mem)")
		curl -s -o "$OUT/heap-$DIRECTORY-$part.pprof" "http://$HTTP/debug/pprof/heap"
	done
	line=$(awk -v h="${H[*]}" -v i="${I[*]}" -v n="${N[*]}" -v rss="$(rss_kb)" 'BEGIN{split(h,H," "); split(i,I," "); split(n,N," ");
		printf "memory: %d / %d / %d contacts: live heap after GC %.2f / %.2f / %.2f MB = %.0f bytes per contact (slope; %.0f over idle); heap_inuse %.1f / %.1f / %.1f MB = %.0f (slope; %.0f over idle); RSS %.0f MB",
			N[1], N[2], N[3], H[1]/1048576, H[2]/1048576, H[3]/1048576, (H[3]-H[2])/(N[3]-N[2]), (H[3]-H[1])/N[3],
			I[1]/1048576, I[2]/1048576, I[3]/1048576, (I[3]-I[2])/(N[3]-N[2]), (I[3]-I[1])/N[3], rss/1024 }')
	if [[ -n $REDIS_PID ]]; then
		line="$line; redis used_memory $(awk -v m="${M[*]}" -v n="${N[*]}" 'BEGIN{split(m,M," "); split(n,N," "); printf "+%.0f bytes per contact", (M[3]-M[2])/(N[3]-N[2])}')"
	fi
	echo "$line" | tee -a "$OUT/summary.txt"
	echo "  where it goes: go tool pprof -sample_index=inuse_space -base $OUT/heap-$DIRECTORY-a.pprof $OUT/heap-$DIRECTORY-b.pprof" | tee -a "$OUT/summary.txt"
fi

header
if [[ " $TESTS " == *" reg "* ]]; then
	fails=0 best=0
	# sipp aborts a registration on an unexpected answer (503 from an overloaded
	# switch) and by default sends a BYE for it, which no phone does: each such
	# BYE cost the switch a parse, a server transaction and a 481, and turned
	# an overloaded step into a collapse (29 Nov). The registration still counts
	# as failed.
	for r in $REG_RATES; do
		if step register "$r" -sf "$ROOT/test/bench/scenarios/register.xml" -inf "$WORK/users.csv" -max_recv_loops 10000 -max_sched_loops 10000 \
			-default_behaviors all,-bye; then
			fails=0 best=$r
		else
			fails=$((fails + 1))
		fi
		((fails >= STOP_AFTER_FAILS)) && break
		sleep 3
	done
	echo "$DIRECTORY register: highest passing step $best REGISTER/s" | tee -a "$OUT/summary.txt"
fi

if [[ " $TESTS " == *" cps "* ]]; then
	# a fresh switch: an overloaded REGISTER step leaves a large heap behind
	[[ " $TESTS " == *" reg "* ]] && start_switch
	# "uas" registers from the UAS's own port, then the UAS answers there.
	timeout 20 "${CPU_LG[@]}" sipp "$SIP" "${SIPP_COMMON[@]}" -mp $((MP + 300)) -p "$UAS_PORT" -m 1 -timeout 15s \
		-sf "$ROOT/test/bench/scenarios/register.xml" -inf "$WORK/uas.csv" >"$WORK/uas-register.out" 2>&1 ||
		{ echo "REGISTER of uas failed" >&2; cat "$WORK/uas-register.out" >&2; exit 1; }
	fails=0 best=0
	for r in $CPS_RATES; do
		"${CPU_LG[@]}" sipp "${SIPP_COMMON[@]}" -mp $((MP + 100)) -p "$UAS_PORT" -sf "$UAS_SCENARIO" \
			-timeout $((DUR * 3 + HOLD_MS / 1000 + 40))s -trace_stat -stf "$WORK/uas-$r.stat.csv" -fd 1 \
			-trace_err -error_file "$WORK/uas-$r.errors.log" ${TRACE:+-trace_msg -message_file "$WORK/uas-$r.msg.log"} >"$WORK/uas-$r.out" 2>&1 &
		uas=$!
		UAS_PID=$uas
		PIDS+=("$uas")
		sleep 0.5
		if step call "$r" -sf "$ROOT/test/bench/scenarios/uac.xml" -s uas -d "$HOLD_MS"; then
			fails=0 best=$r
		else
			fails=$((fails + 1))
		fi
		kill "$uas" 2>/dev/null || true
		wait "$uas" 2>/dev/null || true
		UAS_PID=
		cp "$WORK/uas-$r".* "$OUT/" 2>/dev/null || true
		if [[ -n ${KEEP_ERRORS:-} && -s $WORK/uas-$r.errors.log ]]; then
			echo "--- first $KEEP_ERRORS lines of the UAS's error log at $r calls/s" >&2
			head -"$KEEP_ERRORS" "$WORK/uas-$r.errors.log" >&2
		fi
		((fails >= STOP_AFTER_FAILS)) && break
		sleep 5 # let the last calls' transactions end
	done
	echo "$DIRECTORY calls: highest passing step $best calls/s" | tee -a "$OUT/summary.txt"
fi
echo "switch RSS at the end: $(( $(rss_kb) / 1024 )) MB; summary and files in $OUT" | tee -a "$OUT/summary.txt"
