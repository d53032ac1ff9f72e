#!/usr/bin/env bash
# test/softphones/run.sh: real softphones against the demo network, on loopback.
#
# Builds centralino, runs it with the embedded demo network on free ports (a generated config),
# then drives two Debian baresip 1.0 phones and one linphone (linphonec 5.1) through registrations
# and calls, checking audio both ways by frequency analysis of what each phone decoded, and the
# switch's /metrics after every call. Prints one PASS/FAIL line per check and a summary; exits 0
# when every check passed.
#
#   test/softphones/run.sh             everything (about 4 minutes, much of it baresip's first
#                                      registration retry, see docs/softphones.md)
#   ONLY=baresip test/softphones/run.sh   or ONLY=linphone: one softphone only
#   KEEP=1 ...                         keep the work directory (logs, WAVs) even when all passed
#   CENTRALINO=/path/bin ...           use that binary instead of building one
#   REDIS=1 ...                        the directory in Redis (redis-server, installed if missing)
#
# Loopback only; every process it starts is killed on exit; every wait is bounded.
# Needs: go (unless CENTRALINO is set), python3, curl, baresip (installed with apt-get if missing),
# linphonec (package linphone-cli, installed with apt-get if missing; a FAIL line if that fails).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TONE="python3 $HERE/tone.py"
ONLY=${ONLY:-}
WORK=$(mktemp -d /tmp/centralino-softphones.XXXXXX)
PASSES=0
FAILS=0
FAILED=()
PGIDS=()

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
pass() { PASSES=$((PASSES + 1)); echo "PASS $*"; }
fail() { FAILS=$((FAILS + 1)); FAILED+=("$*"); echo "FAIL $*"; }
check() { # check "label" command...: PASS/FAIL on the command's status
	local label=$1
	shift
	if "$@"; then pass "$label"; else fail "$label"; fi
}

# ---------------------------------------------------------------- processes
# Every process runs in its own session (setsid) and is remembered by its id,
# so cleanup ends exactly what this script started, children included.
spawn() { # spawn NAME LOGFILE command... ; sets SPAWNED to the pid
	local name=$1 logf=$2
	shift 2
	setsid "$@" >"$logf" 2>&1 </dev/null &
	SPAWNED=$!
	PGIDS+=("$SPAWNED")
	log "started $name (pid $SPAWNED)"
}
stop_pid() { # stop_pid PID [grace seconds]: TERM the process group, KILL after the grace
	local pid=$1 grace=${2:-5} i
	kill -TERM -- "-$pid" 2>/dev/null || return 0
	for ((i = 0; i < grace * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL -- "-$pid" 2>/dev/null
	return 0
}
cleanup() {
	local i
	# phones first (they unregister while the switch still answers), the switch last
	for ((i = ${#PGIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PGIDS[i]}" 2; done
	wait 2>/dev/null
	if [ "$FAILS" -eq 0 ] && [ "${KEEP:-0}" != 1 ]; then
		rm -rf "$WORK"
	else
		echo "logs and recordings kept in $WORK" >&2
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_until() { # wait_until SECONDS command...: true as soon as the command succeeds
	local deadline=$((SECONDS + $1))
	shift
	while ((SECONDS < deadline)); do
		"$@" && return 0
		sleep 0.5
	done
	"$@"
}

# ---------------------------------------------------------------- ports
# One block of ports, all free on 127.0.0.1 for UDP and TCP: BASE+0 SIP, +6 WS, +80 HTTP,
# +10..+22 the phones' SIP and console ports (baresip also listens for TLS on its SIP port + 1),
# +100..+179 the phones' RTP, +500..+999 the relay.
pick_base() {
	python3 - <<'EOF'
import random, socket
def free(p):
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            return False
        finally:
            s.close()
    return True
for _ in range(50):
    base = random.randrange(20000, 29000, 10)
    ports = [base + o for o in (0, 6, 80)] + list(range(base + 10, base + 23)) + \
            list(range(base + 100, base + 180)) + list(range(base + 500, base + 1000, 7))
    if all(free(p) for p in ports):
        print(base)
        break
else:
    raise SystemExit("no free block of ports")
EOF
}

# ---------------------------------------------------------------- the switch
BASE=$(pick_base) || { echo "FAIL no free ports"; exit 1; }
SIP=$((BASE + 0))
WS=$((BASE + 6))
HTTP=$((BASE + 80))
API="http://127.0.0.1:$HTTP"
log "work directory $WORK, ports from $BASE (SIP $SIP udp+tcp, WS $WS, HTTP $HTTP, relay $((BASE + 500))-$((BASE + 999)))"

if [ -n "${CENTRALINO:-}" ]; then
	CEN=$CENTRALINO
else
	CEN=$WORK/centralino
	log "building centralino"
	(cd "$ROOT" && go build -o "$CEN" ./cmd/centralino) || { echo "FAIL build"; exit 1; }
fi

# REDIS=1: the directory in a redis-server of its own (a unix socket in the work directory), as
# a network of nodes keeps it; started before the switch, so stopped after it.
DIRECTORY_CONF=
if [ "${REDIS:-0}" = 1 ]; then
	command -v redis-server >/dev/null || apt-get install -y redis-server >&2 || { echo "FAIL install redis-server"; exit 1; }
	spawn redis-server "$WORK/redis.log" redis-server --port 0 --unixsocket "$WORK/redis.sock" --save "" --appendonly no
	wait_until 10 test -S "$WORK/redis.sock" || { echo "FAIL redis-server did not start (see $WORK/redis.log)"; exit 1; }
	DIRECTORY_CONF="directory: {backend: redis, redis_url: \"unix://$WORK/redis.sock\"}"
fi

# The demo network as embedded (configs/demo.yaml has no listen/http/media sections), plus ports.
{
	cat "$ROOT/configs/demo.yaml"
	cat <<EOF

# added by test/softphones/run.sh: free ports on loopback
listen:
  - {transport: udp, addr: "127.0.0.1:$SIP"}
  - {transport: tcp, addr: "127.0.0.1:$SIP"}
  - {transport: ws, addr: "127.0.0.1:$WS"}
http:
  addr: "127.0.0.1:$HTTP"
media:
  port_min: $((BASE + 500))
  port_max: $((BASE + 999))
log:
  level: ${CENTRALINO_LOG_LEVEL:-info}
$DIRECTORY_CONF
EOF
} >"$WORK/centralino.yaml"
"$CEN" check-config "$WORK/centralino.yaml" >&2 || { echo "FAIL config"; exit 1; }
spawn centralino "$WORK/centralino.log" "$CEN" serve --config "$WORK/centralino.yaml"
CEN_PID=$SPAWNED
if wait_until 15 curl -sf "$API/readyz" -o /dev/null; then pass "switch: centralino ready on 127.0.0.1:$SIP"; else
	fail "switch: centralino did not start (see $WORK/centralino.log)"
	exit 1
fi

metric() { # metric NAME: the sum of a metric's samples (0 if absent)
	curl -sf "$API/metrics" | awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%d\n", s }'
}
metric_is() { [ "$(metric "$1")" = "$2" ]; }
registered() { # registered AOR TRANSPORT [USER_AGENT_SUBSTRING]
	curl -sf "$API/api/registrations" | python3 -c '
import json, sys
aor, tr, ua = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else ""
b = json.load(sys.stdin) or []
sys.exit(0 if any(x["aor"] == aor and x["transport"] == tr and ua in x.get("user_agent", "") for x in b) else 1)' "$@"
}
operator_is() { curl -sf -H "X-Agency: $3" "$API/api/operators/$1" | grep -q "\"state\":\"$2\""; } # operator_is USER STATE AGENCY
not_registered() { ! curl -sf "$API/api/registrations" | grep -q "\"aor\":\"$1\""; }
both_unregistered() { not_registered "$A" && not_registered "$B"; } # A, B: the caller's locals

# After a call: no call, no relay session, no port left; packets went through the relay.
check_metrics_after() { # check_metrics_after LABEL PACKETS_BEFORE
	local label=$1 before=$2 after
	check "$label: centralino_active_calls back to 0" wait_until 10 metric_is centralino_active_calls 0
	check "$label: centralino_media_sessions back to 0" wait_until 10 metric_is centralino_media_sessions 0
	check "$label: centralino_media_ports_allocated back to 0" wait_until 10 metric_is centralino_media_ports_allocated 0
	after=$(metric centralino_media_packets_total)
	if [ "$after" -gt "$before" ]; then pass "$label: centralino_media_packets_total grew ($before -> $after)"; else
		fail "$label: centralino_media_packets_total did not grow ($before -> $after)"
	fi
}

# check_tone LABEL WAV FREQ: the WAV's dominant frequency is FREQ (+-15 Hz), loud and clean.
check_tone() {
	local label=$1 wav=$2 want=$3 out f rms secs purity
	if [ ! -s "$wav" ]; then
		fail "$label: no recording ($wav)"
		return
	fi
	out=$($TONE freq "$wav" 1.0)
	read -r f rms secs purity <<<"$out"
	if [ "$f" -ge $((want - 15)) ] && [ "$f" -le $((want + 15)) ] && [ "$rms" -ge 500 ]; then
		pass "$label: heard $f Hz (want $want; rms $rms, purity $purity, ${secs}s)"
	else
		fail "$label: heard ${f} Hz (want $want; rms $rms, purity $purity, ${secs}s) in $wav"
	fi
}

# ---------------------------------------------------------------- baresip
# ensure_baresip installs baresip if missing, then finds its modules (for
# bs_setup): looked for only once it is installed, or a fresh machine's phones
# start without codecs.
ensure_baresip() {
	if ! command -v baresip >/dev/null; then
		log "baresip missing: apt-get install baresip"
		DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y --no-install-recommends baresip-core >&2 ||
			{ timeout 120 apt-get update >&2 && DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y --no-install-recommends baresip-core >&2; }
	fi
	BARESIP_MODULES=$(ls -d /usr/lib/baresip/modules /usr/lib/*/baresip/modules /usr/local/lib/baresip/modules 2>/dev/null | head -1)
	command -v baresip >/dev/null && [ -n "$BARESIP_MODULES" ]
}

# bs_setup NAME SIPPORT CONSPORT RTPMIN TONEHZ ACCOUNTLINE: a baresip home in $WORK/NAME
bs_setup() {
	local d=$WORK/$1
	mkdir -p "$d"
	$TONE gen "$d/tone.wav" "$5" 60
	cat >"$d/config" <<EOF
poll_method		epoll
sip_listen		127.0.0.1:$2
sip_trace		yes
module_path		$BARESIP_MODULES
module			g711.so
module			aufile.so
module			sndfile.so
module			cons.so
module			account.so
module			menu.so
cons_listen		127.0.0.1:$3
audio_source		aufile,$d/tone.wav
audio_alert		aufile,/dev/null
snd_path		$d
rtp_ports		$4-$(($4 + 19))
EOF
	echo "$6" >"$d/accounts"
	: >"$d/contacts"
}
declare -A BS_PID BS_CONS
bs_start() { # bs_start NAME CONSPORT
	local d=$WORK/$1
	rm -f "$d"/dump-*.wav
	spawn "baresip $1" "$d/log" baresip -f "$d"
	BS_PID[$1]=$SPAWNED
	BS_CONS[$1]=$2
}
bs_cmd() { # bs_cmd NAME COMMAND: a command to baresip's cons module (UDP)
	printf '%s\n' "$2" >"/dev/udp/127.0.0.1/${BS_CONS[$1]}"
}
gone() { ! kill -0 "$1" 2>/dev/null; }
bs_stop() { # bs_stop NAME: /quit (unregisters), then TERM/KILL if it lingers
	local pid=${BS_PID[$1]}
	bs_cmd "$1" "/quit" 2>/dev/null
	wait_until 5 gone "$pid" || stop_pid "$pid" 3
}
log_count() { grep -c -- "$2" "$1" 2>/dev/null || true; }
log_has_more() { [ "$(log_count "$1" "$2")" -gt "$3" ]; } # log_has_more FILE PATTERN N
both_more() { log_has_more "$1" "$2" "$3" && log_has_more "$4" "$5" "$6"; }
newest_dump() { ls -t "$WORK/$1"/dump-*-dec.wav 2>/dev/null | head -1; }

# bs_call LABEL CALLER CALLEE NUMBER CALLER_HZ CALLEE_HZ HANGUP_BY
bs_call() {
	local label=$1 a=$2 b=$3 num=$4 fa=$5 fb=$6 by=$7
	local la=$WORK/$a/log lb=$WORK/$b/log
	local ea eb ta tb before
	ea=$(log_count "$la" "Call established")
	eb=$(log_count "$lb" "Call established")
	ta=$(log_count "$la" "terminated")
	tb=$(log_count "$lb" "terminated")
	rm -f "$WORK/$a"/dump-*.wav "$WORK/$b"/dump-*.wav
	before=$(metric centralino_media_packets_total)
	bs_cmd "$a" "/dial $num"
	if wait_until 20 log_has_more "$la" "Call established" "$ea" && wait_until 5 log_has_more "$lb" "Call established" "$eb"; then
		pass "$label: call $a -> $num established on both phones"
	else
		fail "$label: call $a -> $num not established (see $la, $lb)"
		bs_cmd "$a" "/hangup"
		bs_cmd "$b" "/hangup"
		return
	fi
	check "$label: centralino_active_calls is 1 during the call" wait_until 5 metric_is centralino_active_calls 1
	sleep 6
	bs_cmd "$by" "/hangup"
	check "$label: both phones see the call end after /hangup on $by" \
		wait_until 10 both_more "$la" terminated "$ta" "$lb" terminated "$tb"
	sleep 1 # let sndfile close its WAVs
	check_tone "$label: audio $b -> $a" "$(newest_dump "$a")" "$fb"
	check_tone "$label: audio $a -> $b" "$(newest_dump "$b")" "$fa"
	check_metrics_after "$label" "$before"
}

# bs_transfer LABEL CALLER OPERATOR TARGET_PHONE TARGET_NUMBER CALLER_HZ TARGET_HZ: the caller calls the
# operator (8100201), the operator's /transfer sends it to TARGET_NUMBER (a blind REFER across agencies);
# the caller's phone follows, the target answers, audio flows both ways, and the switch counts it.
bs_transfer() {
	local label=$1 a=$2 op=$3 b=$4 num=$5 fa=$6 fb=$7
	local la=$WORK/$a/log lo=$WORK/$op/log lb=$WORK/$b/log
	local ea eo eb tb before transfers
	ea=$(log_count "$la" "Call established")
	eo=$(log_count "$lo" "Call established")
	eb=$(log_count "$lb" "Call established")
	tb=$(log_count "$lb" "terminated")
	transfers=$(metric centralino_transfers_total)
	bs_cmd "$a" "/dial 8100201"
	if ! { wait_until 20 log_has_more "$la" "Call established" "$ea" && wait_until 5 log_has_more "$lo" "Call established" "$eo"; }; then
		fail "$label: call $a -> the operator not established (see $la, $lo)"
		bs_cmd "$a" "/hangup"
		return
	fi
	sleep 2
	rm -f "$WORK/$a"/dump-*.wav "$WORK/$b"/dump-*.wav
	before=$(metric centralino_media_packets_total)
	bs_cmd "$op" "/transfer $num"
	if wait_until 20 log_has_more "$lb" "Call established" "$eb" && wait_until 5 log_has_more "$la" "Call established" $((ea + 1)); then
		pass "$label: the operator's /transfer $num: $a now talks to $b"
	else
		fail "$label: /transfer $num did not connect $a to $b (see $lo, $la, $lb)"
		bs_cmd "$a" "/hangup"
		bs_cmd "$op" "/hangup"
		return
	fi
	check "$label: centralino_transfers_total counted the transfer" wait_until 5 metric_is centralino_transfers_total $((transfers + 1))
	sleep 6
	bs_cmd "$a" "/hangup"
	check "$label: the target sees the call end" wait_until 10 log_has_more "$lb" terminated "$tb"
	bs_cmd "$op" "/hangup" 2>/dev/null
	sleep 1
	check_tone "$label: audio $b -> $a after the transfer" "$(newest_dump "$a")" "$fb"
	check_tone "$label: audio $a -> $b after the transfer" "$(newest_dump "$b")" "$fa"
}

run_baresip() {
	if ! ensure_baresip; then
		fail "baresip: not installed and apt-get install failed"
		return
	fi
	local A=campania.esposito B=inps.ricci
	local acc_a acc_b
	# UDP: A is 8100101 with a 440 Hz tone, B is 8300201 with a 660 Hz tone; B answers by itself.
	acc_a="<sip:$A@lineamica.gov.it;transport=udp>;auth_pass=demo-$A;outbound=\"sip:127.0.0.1:$SIP\";regint=600;answermode=auto"
	acc_b="<sip:$B@lineamica.gov.it;transport=udp>;auth_pass=demo-$B;outbound=\"sip:127.0.0.1:$SIP\";regint=600;answermode=auto"
	bs_setup bsA $((BASE + 10)) $((BASE + 16)) $((BASE + 100)) 440 "$acc_a"
	bs_setup bsB $((BASE + 12)) $((BASE + 17)) $((BASE + 120)) 660 "$acc_b"
	bs_start bsA $((BASE + 16))
	bs_start bsB $((BASE + 17))
	# baresip 1.0 fails on the first (MD5 + SHA-256) challenge, the switch learns, the retry succeeds.
	local t0=$SECONDS
	if wait_until 100 registered "$A" udp && wait_until 60 registered "$B" udp; then
		pass "baresip/udp: both phones registered over UDP (after $((SECONDS - t0)) s)"
	else
		fail "baresip/udp: registration over UDP (see $WORK/bsA/log, $WORK/bsB/log)"
		bs_stop bsA
		bs_stop bsB
		return
	fi
	bs_call "baresip/udp" bsA bsB 8300201 440 660 bsA
	bs_call "baresip/udp reverse" bsB bsA 8100101 660 440 bsA
	# Transfer: C is URP Campania's operator (8100201, 880 Hz), who hands A to INPS's B.
	local OP=campania.deluca
	bs_setup bsC $((BASE + 20)) $((BASE + 22)) $((BASE + 160)) 880 \
		"<sip:$OP@lineamica.gov.it;transport=udp>;auth_pass=demo-$OP;outbound=\"sip:127.0.0.1:$SIP\";regint=600;answermode=auto"
	bs_start bsC $((BASE + 22))
	if wait_until 100 registered "$OP" udp; then
		bs_cmd bsC "/dial *11"
		check "baresip/feature code: the operator's /dial *11 logs it in to its queue" \
			wait_until 10 operator_is "$OP" available r_campan
		check "baresip/feature code: the phone shows the switch's answer" \
			wait_until 5 log_has_more "$WORK/bsC/log" "Accesso alla coda effettuato" 0
		bs_transfer "baresip/transfer" bsA bsC bsB 8300201 440 660
	else
		fail "baresip/transfer: the operator's phone did not register (see $WORK/bsC/log)"
	fi
	bs_stop bsC
	bs_stop bsA
	bs_stop bsB
	check "baresip/udp: phones unregistered on /quit" wait_until 5 both_unregistered

	# TCP pass: same users, both over TCP (the switch now challenges this address with MD5 only,
	# so the registration is immediate).
	acc_a="<sip:$A@lineamica.gov.it;transport=tcp>;auth_pass=demo-$A;outbound=\"sip:127.0.0.1:$SIP;transport=tcp\";regint=600;answermode=auto"
	acc_b="<sip:$B@lineamica.gov.it;transport=tcp>;auth_pass=demo-$B;outbound=\"sip:127.0.0.1:$SIP;transport=tcp\";regint=600;answermode=auto"
	echo "$acc_a" >"$WORK/bsA/accounts"
	echo "$acc_b" >"$WORK/bsB/accounts"
	bs_start bsA $((BASE + 16))
	bs_start bsB $((BASE + 17))
	t0=$SECONDS
	if wait_until 60 registered "$A" tcp && wait_until 30 registered "$B" tcp; then
		pass "baresip/tcp: both phones registered over TCP (after $((SECONDS - t0)) s)"
		bs_call "baresip/tcp" bsA bsB 8300201 440 660 bsB
	else
		fail "baresip/tcp: registration over TCP (see $WORK/bsA/log, $WORK/bsB/log)"
	fi
	bs_stop bsA

	# Mixed: A over UDP calls B over TCP (the switch records two routes, RFC 5658).
	acc_a="<sip:$A@lineamica.gov.it;transport=udp>;auth_pass=demo-$A;outbound=\"sip:127.0.0.1:$SIP\";regint=600;answermode=auto"
	echo "$acc_a" >"$WORK/bsA/accounts"
	bs_start bsA $((BASE + 16))
	if wait_until 60 registered "$A" udp && registered "$B" tcp; then
		pass "baresip/mixed: A registered over UDP, B over TCP"
		bs_call "baresip/udp->tcp" bsA bsB 8300201 440 660 bsA
		bs_call "baresip/tcp->udp" bsB bsA 8100101 660 440 bsB
	else
		fail "baresip/mixed: registration (see $WORK/bsA/log)"
	fi
	bs_stop bsA
	bs_stop bsB
}

# ---------------------------------------------------------------- linphone
ensure_linphone() {
	command -v linphonec >/dev/null && return 0
	log "linphonec missing: apt-get install linphone-cli"
	DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y --no-install-recommends linphone-cli >&2 ||
		{ timeout 120 apt-get update >&2 && DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y --no-install-recommends linphone-cli >&2; }
	command -v linphonec >/dev/null
}
LP=$WORK/lp
LP_USER=age.greco # 8400201
LP_N=0
LP_PID=
LP_LOG=
# lp_rc udp|tcp|srtp: linphonec's config (srtp: UDP, offering SRTP keys beside plain RTP, which
# makes a ~1.8 KB INVITE). linphone rewrites it on exit, so it is made afresh each start.
#  - [sip] sip_port is the UDP port (there is no sip_udp_port); 0 disables a transport, -1 is random;
#  - reg_route makes the switch the outbound proxy: without it linphone sends the INVITE to
#    lineamica.gov.it itself (DNS) and the call fails; reg_proxy alone is only the registrar.
lp_rc() {
	local udp=0 tcp=0 tp=""
	local enc=none
	if [ "$1" = tcp ]; then tcp=$((BASE + 15)) tp=";transport=tcp"; else udp=$((BASE + 14)); fi
	if [ "$1" = srtp ]; then enc=srtp; fi
	cat >"$LP/rc" <<EOF
[sip]
media_encryption=$enc
media_encryption_mandatory=0
sip_port=$udp
sip_tcp_port=$tcp
sip_tls_port=0
default_proxy=0
register_only_when_network_is_up=1
inc_timeout=30

[rtp]
audio_rtp_port=$((BASE + 140))
video_rtp_port=$((BASE + 142))
text_rtp_port=$((BASE + 144))

[video]
display=0
capture=0

[proxy_0]
reg_proxy=<sip:127.0.0.1:$SIP$tp>
reg_route=<sip:127.0.0.1:$SIP$tp;lr>
reg_identity=sip:$LP_USER@lineamica.gov.it
reg_expires=600
reg_sendregister=1

[auth_info_0]
username=$LP_USER
passwd=demo-$LP_USER
realm=lineamica.gov.it
EOF
}
# lp_start udp|tcp|srtp: linphonec reading commands from a FIFO. HOME is a fresh directory holding
# ~/.local/share/linphone: without that directory linphone 5.1 cannot open its database, stops
# half-way through starting and never brings its network up ("No listening point matching").
lp_start() {
	mkdir -p "$LP/home/.local/share/linphone"
	lp_rc "$1"
	rm -f "$LP/in" && mkfifo "$LP/in"
	exec 7<>"$LP/in"
	: >"$LP/out"
	HOME=$LP/home setsid stdbuf -oL linphonec -c "$LP/rc" -d 6 -l "$LP/linphone-$1.log" <"$LP/in" >"$LP/out" 2>&1 &
	LP_PID=$!
	LP_LOG=$LP/linphone-$1.log
	PGIDS+=("$LP_PID")
	log "started linphonec over $1 (pid $LP_PID)"
	lp_cmd "soundcard use files" # WAV files instead of a sound card: 'play' is the microphone,
	lp_cmd "play $LP/tone.wav"   # 'record' the loudspeaker
	lp_cmd "autoanswer enable"
}
lp_cmd() { printf '%s\n' "$1" >&7; }
lp_stop() {
	lp_cmd "quit" 2>/dev/null
	wait_until 8 gone "$LP_PID" || stop_pid "$LP_PID" 3
	exec 7>&-
}
lp_registered() { registered "$LP_USER" "$1" Linphone; }

# lp_call LABEL out|in HANGUP_BY(lp|bs): linphone calls baresip bsL (out) or is called (in).
lp_call() {
	local label=$1 dir=$2 by=$3 lb=$WORK/bsL/log
	local rec cl el eb tb before
	LP_N=$((LP_N + 1))
	rec=$LP/rec-$LP_N.wav
	lp_cmd "record $rec"
	sleep 0.5
	cl=$(log_count "$LP/out" " connected.")
	el=$(log_count "$LP/out" " ended ")
	eb=$(log_count "$lb" "Call established")
	tb=$(log_count "$lb" "terminated")
	rm -f "$WORK/bsL"/dump-*.wav
	before=$(metric centralino_media_packets_total)
	if [ "$dir" = out ]; then lp_cmd "call 8300201"; else bs_cmd bsL "/dial 8400201"; fi
	if wait_until 20 log_has_more "$LP/out" " connected." "$cl" && wait_until 5 log_has_more "$lb" "Call established" "$eb"; then
		pass "$label: call established on both phones"
	else
		local got
		got=$(grep -h -E '^SIP/2.0 [3-6][0-9][0-9] ' "$LP_LOG" | grep -v -E '^SIP/2.0 40[17] ' | tail -1 | tr -d '\r')
		fail "$label: call not established${got:+, linphone got \"$got\"} (see $LP/out, $LP/linphone-*.log, $lb, $WORK/centralino.log)"
		lp_cmd "terminate"
		bs_cmd bsL "/hangup"
		sleep 2
		return
	fi
	check "$label: centralino_active_calls is 1 during the call" wait_until 5 metric_is centralino_active_calls 1
	sleep 6
	if [ "$by" = lp ]; then lp_cmd "terminate"; else bs_cmd bsL "/hangup"; fi
	check "$label: both phones see the call end (hung up by $by)" \
		wait_until 10 both_more "$LP/out" " ended " "$el" "$lb" terminated "$tb"
	sleep 1
	check_tone "$label: audio baresip -> linphone" "$rec" 660
	check_tone "$label: audio linphone -> baresip" "$(newest_dump bsL)" 1000
	check_metrics_after "$label" "$before"
}

# lp_transfer LABEL: baresip bsM (campania.esposito, 440 Hz) calls linphone (the Agenzia delle Entrate's
# operator, 8400201), which transfers it with linphonec's 'transfer' (a blind REFER) to INPS's baresip bsL
# (8300201): bsM follows, bsL answers, audio flows both ways, the switch counts the transfer.
lp_transfer() {
	local label=$1 lm=$WORK/bsM/log lb=$WORK/bsL/log
	local cl em eb tb transfers id
	cl=$(log_count "$LP/out" " connected.")
	em=$(log_count "$lm" "Call established")
	eb=$(log_count "$lb" "Call established")
	tb=$(log_count "$lb" "terminated")
	transfers=$(metric centralino_transfers_total)
	bs_cmd bsM "/dial 8400201"
	if ! { wait_until 20 log_has_more "$LP/out" " connected." "$cl" && wait_until 5 log_has_more "$lm" "Call established" "$em"; }; then
		fail "$label: bsM -> linphone not established (see $LP/out, $lm)"
		bs_cmd bsM "/hangup"
		return
	fi
	sleep 2
	id=$(grep -o -E 'Call [0-9]+ with [^ ]+ connected' "$LP/out" | tail -1 | awk '{print $2}')
	rm -f "$WORK/bsM"/dump-*.wav "$WORK/bsL"/dump-*.wav
	lp_cmd "transfer ${id:-1} sip:8300201@lineamica.gov.it"
	if wait_until 20 log_has_more "$lb" "Call established" "$eb" && wait_until 5 log_has_more "$lm" "Call established" $((em + 1)); then
		pass "$label: linphone's transfer to 8300201: bsM now talks to bsL"
	else
		fail "$label: linphone's transfer did not connect bsM to bsL (see $LP/out, $lm, $lb)"
		bs_cmd bsM "/hangup"
		lp_cmd "terminate"
		return
	fi
	check "$label: centralino_transfers_total counted the transfer" wait_until 5 metric_is centralino_transfers_total $((transfers + 1))
	sleep 6
	bs_cmd bsM "/hangup"
	check "$label: the target sees the call end" wait_until 10 log_has_more "$lb" terminated "$tb"
	sleep 1
	check_tone "$label: audio bsL -> bsM after the transfer" "$(newest_dump bsM)" 660
	check_tone "$label: audio bsM -> bsL after the transfer" "$(newest_dump bsL)" 440
}

# Registration first, against a switch that has not met baresip yet: linphone gets the
# two-algorithm challenge (MD5 and SHA-256) every phone gets at first.
lp_register_fresh() {
	if ! ensure_linphone; then
		fail "linphone: linphonec not installed and apt-get install failed"
		return 1
	fi
	mkdir -p "$LP"
	$TONE gen "$LP/tone.wav" 1000 60
	lp_start udp
	if wait_until 20 lp_registered udp; then
		local alg
		alg=$(grep -o -m1 'Authorization: *Digest .*' "$LP/linphone-udp.log" | grep -o 'algorithm=[A-Z0-9-]*')
		pass "linphone/udp: registered at once on the MD5 + SHA-256 challenge (answered with ${alg:-?})"
	else
		fail "linphone/udp: registration (see $LP/linphone-udp.log)"
		return 1
	fi
}

run_linphone() {
	local B=inps.ricci
	if [ -z "$LP_PID" ] || ! kill -0 "$LP_PID" 2>/dev/null; then return; fi
	ensure_baresip || { fail "linphone: baresip (the other phone) missing"; return; }
	# the other phone: baresip inps.ricci (8300201) over UDP, 660 Hz, answering by itself
	bs_setup bsL $((BASE + 10)) $((BASE + 16)) $((BASE + 100)) 660 \
		"<sip:$B@lineamica.gov.it;transport=udp>;auth_pass=demo-$B;outbound=\"sip:127.0.0.1:$SIP\";regint=600;answermode=auto"
	bs_start bsL $((BASE + 16))
	if ! wait_until 100 registered "$B" udp; then
		fail "linphone: the baresip phone did not register (see $WORK/bsL/log)"
		return
	fi
	lp_call "linphone/udp -> baresip/udp" out lp
	lp_call "baresip/udp -> linphone/udp" in bs
	local M=campania.esposito
	bs_setup bsM $((BASE + 20)) $((BASE + 22)) $((BASE + 160)) 440 \
		"<sip:$M@lineamica.gov.it;transport=udp>;auth_pass=demo-$M;outbound=\"sip:127.0.0.1:$SIP\";regint=600;answermode=auto"
	bs_start bsM $((BASE + 22))
	if wait_until 100 registered "$M" udp; then
		lp_transfer "linphone/transfer"
	else
		fail "linphone/transfer: the caller's baresip did not register (see $WORK/bsM/log)"
	fi
	bs_stop bsM
	lp_stop
	check "linphone/udp: unregistered on quit" wait_until 5 not_registered "$LP_USER"

	lp_start tcp
	if wait_until 20 lp_registered tcp; then
		pass "linphone/tcp: registered over TCP"
		lp_call "linphone/tcp -> baresip/udp" out lp
		lp_call "baresip/udp -> linphone/tcp" in lp
	else
		fail "linphone/tcp: registration (see $LP/linphone-tcp.log)"
	fi
	lp_stop

	# An INVITE bigger than 1300 bytes received over UDP and forwarded over UDP (sipgo's default
	# limit; the switch answered 480 before cbdc388).
	lp_start srtp
	if wait_until 20 lp_registered udp; then
		lp_call "linphone/udp offering SRTP (large INVITE) -> baresip/udp" out lp
	else
		fail "linphone/srtp: registration (see $LP/linphone-srtp.log)"
	fi
	lp_stop
	bs_stop bsL
}

case "$ONLY" in "" | linphone) lp_register_fresh ;; esac
case "$ONLY" in "" | baresip) run_baresip ;; esac
case "$ONLY" in "" | linphone) run_linphone ;; esac

# Run as root, latched plain RTP is forwarded in the kernel (media.kernel: auto): the calls above
# must have gone through that path, their audio checked like the rest.
if grep -q "forwarding latched plain RTP in the kernel" "$WORK/centralino.log"; then
	n=$(metric centralino_media_kernel_packets_total)
	if [ "$n" -gt 0 ]; then pass "kernel path: $n packets of these calls forwarded in the kernel"; else
		fail "kernel path: loaded, but no packet forwarded in the kernel"
	fi
fi

# Every REGISTER these phones sent over UDP was read by the registrar's scan, not parsed whole.
n=$(metric centralino_sip_register_full_parses_total)
if [ "$n" = 0 ]; then pass "registrar: every UDP REGISTER of these phones read by the scan"; else
	fail "registrar: $n UDP REGISTERs left to sipgo's whole parse"
fi

echo
echo "SUMMARY: $PASSES passed, $FAILS failed"
for f in "${FAILED[@]}"; do echo "  failed: $f"; done
[ "$FAILS" -eq 0 ]
