#!/usr/bin/env bash
# make bench: the SIP load test on the memory directory, then on Redis, then
# the media relay load test if the project has one. Figures, not assertions.
#   REV=HEAD make bench      # measure the last commit, not the working tree
# Every variable of sip.sh passes through (REG_RATES, CPS_RATES, DUR, ...).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d -t centralino-bench.XXXXXX)}
echo "results in $OUT"
for dir in memory redis; do
	DIRECTORY=$dir OUT=$OUT/$dir test/bench/sip.sh
done
# Calls again with media anchored through the relay (SIP + relay ports).
DIRECTORY=memory TESTS=cps MEDIA_ANCHOR=always CPS_RATES=${ANCHOR_RATES:-"1000 2000 2500"} \
	OUT=$OUT/anchored test/bench/sip.sh || true
if [[ -d cmd/centralino-rtpload ]]; then
	echo "== media relay load (cmd/centralino-rtpload)"
	go run ./cmd/centralino-rtpload ${RTPLOAD_ARGS:-}
fi
