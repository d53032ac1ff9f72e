#!/usr/bin/env bash
# Points ../shared/bench/run-kamailio.sh (the peer harness, kept outside the
# project) at a fresh `centralino serve` on the memory directory, pinned to
# CPU 0 as the harness pins Kamailio. Run it in the same session as the
# harness's own Kamailio run to compare. Bounded: the harness bounds each step.
#   test/bench/peer.sh                          # REV=HEAD by default
#   REG_RATES="5000 10000" CPS_RATES="1000 2000" DUR=10 test/bench/peer.sh
#   SIP=127.0.0.1:35060 HTTP=127.0.0.1:38080 UAC_PORT=35061 UAS_PORT=35080  # ports others do not use
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
HARNESS=${HARNESS:-$ROOT/../shared/bench/run-kamailio.sh}
[[ -x $HARNESS ]] || { echo "no harness at $HARNESS" >&2; exit 1; }
REV=${REV:-HEAD}
SIP=${SIP:-127.0.0.1:25060} HTTP=${HTTP:-127.0.0.1:28080}
WORK=$(mktemp -d)
SW=
cleanup() { [[ -n $SW ]] && kill "$SW" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir "$WORK/src"
git archive "$REV" | tar -x -C "$WORK/src"
rm -rf "$WORK/src/test/bench/genconfig" && mkdir -p "$WORK/src/test/bench" && cp -r "$ROOT/test/bench/genconfig" "$WORK/src/test/bench/"
(cd "$WORK/src" && go build -o "$WORK/centralino" ./cmd/centralino && go build -o "$WORK/genconfig" ./test/bench/genconfig)
"$WORK/genconfig" -users 10000 -sip "$SIP" -http "$HTTP" -media-ports "${MEDIA_PORTS:-50000-64999}" -media-anchor "${MEDIA_ANCHOR:-never}" -o "$WORK/bench.yaml"
for a in "$SIP" "$HTTP"; do
	[[ -z $(ss -Hln "sport = :${a##*:}" 2>/dev/null) ]] || { echo "port of $a already taken (another switch?); set SIP=/HTTP=" >&2; exit 1; }
done
taskset -c 0 "$WORK/centralino" serve --config "$WORK/bench.yaml" >"$WORK/centralino.log" 2>&1 &
SW=$!
for _ in $(seq 100); do curl -sf "http://$HTTP/readyz" >/dev/null && break; sleep 0.1; done
kill -0 "$SW" || { cat "$WORK/centralino.log" >&2; exit 1; }
echo "centralino $(git rev-parse --short "$REV") pid $SW on $SIP (pinned to CPU 0)"
UAC_PORT=${UAC_PORT:-15061} UAS_PORT=${UAS_PORT:-15080} TARGET=$SIP TARGET_PID=$SW AUTH=1 USERS=10000 USER_PREFIX=u PW_PREFIX=pass- DOMAIN=example.test \
	PIN=pinned DUR=${DUR:-10} REG_RATES=${REG_RATES:-"5000 7500 10000 15000"} CPS_RATES=${CPS_RATES:-"500 1000 1500 2000 2500"} \
	RESULTS_DIR=${RESULTS_DIR:-$(mktemp -d -t peer-centralino.XXXXXX)} "$HARNESS"
