#!/usr/bin/env bash
# ZenConn against ZenConn: the binary of BASE_REF against the binary of
# NEW_REF (default: the working tree), in one run, in ABBA order (BASE,
# NEW, NEW, BASE; CYCLES times), on the idle-memory, maximum fan-out and
# churn scenarios. Each run is one call of the scenario's own script
# (run-idle.sh, run-fanout.sh, run-churn.sh) with ROUNDS=1, ZenConn alone
# (IDLE_SERVERS, FANOUT_SCRIPT_SERVERS, SERVERS=zenconn) and ZENCONN_BIN set
# to the binary of that side, so pinning, load and settings are those of
# the scripts.
#
# Usage: bash bench/run-compare.sh [-o FILE] BASE_REF [NEW_REF]
#   env: OUT (the markdown file; default bench/notes/compare-<date>.md),
#        CYCLES (6), SCENARIOS ("idle fanout churn"), IDLE_CONNS (15000),
#        FANOUT_SUBS (5000), FANOUT_DURATION (10s), CHURN_CONNS (64),
#        CHURN_DURATION (10s), CHURN_WARMUP (3s), KEEP_WORK=1 (keep the
#        binaries, every run's JSON and log, and the scripts' work folders)
#   and every setting of the scripts (SERVER_CPU, LOAD_CPU, ZENCONN_EXTRA...).
# Prints the markdown table on stdout (and writes it to OUT); progress on
# stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
	echo "usage: bash bench/run-compare.sh [-o FILE] BASE_REF [NEW_REF]" >&2
	exit 2
}
while getopts "o:h" opt; do
	case $opt in
	o) OUT=$OPTARG ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] && [ $# -le 2 ] || usage
BASE_REF=$1
NEW_REF=${2:-}
: "${OUT:=bench/notes/compare-$(date -u +%Y%m%d-%H%M).md}"
: "${CYCLES:=6}" "${SCENARIOS:=idle fanout churn}"
: "${IDLE_CONNS:=15000}" "${FANOUT_SUBS:=5000}" "${FANOUT_DURATION:=10s}"
: "${CHURN_CONNS:=64}" "${CHURN_DURATION:=10s}" "${CHURN_WARMUP:=3s}"
: "${SERVER_CPU:=1}" "${LOAD_CPU:=0}"
export SERVER_CPU LOAD_CPU
command -v jq >/dev/null || { echo "run-compare.sh: jq is required" >&2; exit 1; }
git rev-parse --verify -q "$BASE_REF^{commit}" >/dev/null || { echo "run-compare.sh: unknown ref $BASE_REF" >&2; exit 1; }
[ -z "$NEW_REF" ] || git rev-parse --verify -q "$NEW_REF^{commit}" >/dev/null || { echo "run-compare.sh: unknown ref $NEW_REF" >&2; exit 1; }

CMP=$(mktemp -d "${TMPDIR:-/tmp}/zenconn-compare.XXXXXX")
TREES=()
log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
finish() {
	local t
	for t in "${TREES[@]}"; do git worktree remove --force "$t" 2>/dev/null || true; done
	if [ -n "${KEEP_WORK:-}" ]; then log "work folder kept: $CMP"; else rm -rf "$CMP"; fi
}
trap finish EXIT
trap 'exit 130' INT TERM

# build_ref REF BIN: the zenconn of commit REF, from a temporary worktree.
build_ref() {
	local tree
	tree="$CMP/src-$(basename "$2")"
	git worktree add -q --detach "$tree" "$1"
	TREES+=("$tree")
	(cd "$tree" && go build -o "$2" ./cmd/zenconn)
}

START=$(date +%s)
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
BASE_ID=$(git rev-parse --short "$BASE_REF")
log "building BASE ($BASE_REF = $BASE_ID)"
build_ref "$BASE_REF" "$CMP/zenconn-base"
if [ -n "$NEW_REF" ]; then
	NEW_ID=$(git rev-parse --short "$NEW_REF")
	log "building NEW ($NEW_REF = $NEW_ID)"
	build_ref "$NEW_REF" "$CMP/zenconn-new"
	NEW_NAME=$NEW_REF
else
	NEW_ID=$(git rev-parse --short HEAD)
	[ -z "$(git status --porcelain -- . ':!bench')" ] || NEW_ID="$NEW_ID+uncommitted"
	log "building NEW (working tree, $NEW_ID)"
	go build -o "$CMP/zenconn-new" ./cmd/zenconn
	NEW_NAME="working tree"
fi
# One generator, baseline and floor for both sides: from this tree.
mkdir -p "$CMP/tools"
for t in baseline floor load; do go build -o "$CMP/tools/$t" "./bench/$t"; done

# scenario NAME: runs its script once (ROUNDS=1, ZenConn alone) with the
# environment for the binary in ZENCONN_BIN; JSON on stdout.
scenario() {
	case $1 in
	idle) CONNS=$IDLE_CONNS ROUNDS=1 IDLE_SERVERS=zenconn bash bench/run-idle.sh ;;
	fanout) SUBS=$FANOUT_SUBS DURATION=$FANOUT_DURATION ROUNDS=1 FANOUT_SCRIPT_SERVERS=zenconn FANOUT_TESTS=max bash bench/run-fanout.sh ;;
	churn) CONNS=$CHURN_CONNS DURATION=$CHURN_DURATION WARMUP=$CHURN_WARMUP ROUNDS=1 SERVERS=zenconn bash bench/run-churn.sh ;;
	*) log "unknown scenario $1"; exit 2 ;;
	esac
}

# figures NAME: the rows of the table, "jq path|label|better".
figures() {
	case $1 in
	idle) echo '.medians.idle.zenconn.kib_per_conn|RSS per connection, KiB|lower'
		echo '.medians.idle.zenconn.rss_after_kib|RSS with the connections, KiB|lower' ;;
	fanout) echo '.medians.max.zenconn.deliveries_per_sec|max deliveries/s|higher'
		echo '.medians.max.zenconn.server_cpu_us_per_delivery|server CPU µs per delivery|lower' ;;
	churn) echo '.medians.churn.zenconn.cycles_per_sec|cycles/s|higher'
		echo '.medians.churn.zenconn.server_cpu_us_per_cycle|server CPU µs per cycle|lower' ;;
	esac
}

ORDER=()
for _ in $(seq "$CYCLES"); do ORDER+=(base new new base); done
export BENCH_TOOLS="$CMP/tools"
for scen in $SCENARIOS; do
	n=0
	for side in "${ORDER[@]}"; do
		n=$((n + 1))
		f="$CMP/$scen-$n-$side"
		log "$scen: run $n of ${#ORDER[@]}: $side"
		ZENCONN_BIN="$CMP/zenconn-$side" scenario "$scen" >"$f.json" 2>"$f.log" ||
			log "$scen: run $n ($side) exited with status $? (see KEEP_WORK=1 for its log)"
		first=$(figures "$scen" | head -1 | cut -d'|' -f1)
		log "$scen: run $n ($side): $(jq -r "$first // \"no result\"" "$f.json" 2>/dev/null || echo 'no result')"
	done
done
SECONDS_TOTAL=$(($(date +%s) - START))

# NUM: awk's num(v), a figure as the table prints it.
NUM='function num(v, a) { a = (v < 0) ? -v : v
	if (a >= 1000) return sprintf("%.0f", v); return sprintf("%.4g", v) }'

# stats V...: median, spread (max - min) and spread in % of the median.
stats() {
	[ $# -gt 0 ] || { echo "— — —"; return; }
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
		m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
		printf "%s %s %s\n", num(m), num(v[NR] - v[1]), (m != 0) ? sprintf("%.1f%%", 100 * (v[NR] - v[1]) / m) : "—"
	}
	'"$NUM"
}

table() {
	local i head sep
	echo "# ZenConn $NEW_ID against $BASE_ID"
	echo
	echo "BASE: \`$BASE_REF\` ($BASE_ID); NEW: $NEW_NAME ($NEW_ID). $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), server on CPU $SERVER_CPU, generator on CPU $LOAD_CPU; load average $LOADAVG_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end; $((SECONDS_TOTAL / 60)) min $((SECONDS_TOTAL % 60)) s in all."
	echo
	echo "\`bash bench/run-compare.sh $BASE_REF${NEW_REF:+ $NEW_REF}\` with CYCLES=$CYCLES, IDLE_CONNS=$IDLE_CONNS, FANOUT_SUBS=$FANOUT_SUBS, FANOUT_DURATION=$FANOUT_DURATION, CHURN_CONNS=$CHURN_CONNS, CHURN_DURATION=$CHURN_DURATION, CHURN_WARMUP=$CHURN_WARMUP${ZENCONN_EXTRA:+, ZENCONN_EXTRA=$ZENCONN_EXTRA}. Each run is one call of the scenario's script with ROUNDS=1 and ZenConn alone, in this order: ${ORDER[*]}. Spread: the largest minus the smallest run of one binary (and in % of its median); **within** when the medians differ by no more than the larger spread."
	echo
	head="| scenario | figure |"
	sep="| --- | --- |"
	for i in "${!ORDER[@]}"; do
		head+=" $((i + 1)) ${ORDER[i]^^} |"
		sep+=" ---: |"
	done
	echo "$head BASE median | NEW median | NEW/BASE | BASE spread | NEW spread | moved |"
	echo "$sep ---: | ---: | ---: | ---: | ---: | --- |"
	local scen path label better row n v a=() b=()
	for scen in $SCENARIOS; do
		while IFS='|' read -r path label better; do
			row="| $scen | $label ($better is better) |"
			a=() b=()
			n=0
			for side in "${ORDER[@]}"; do
				n=$((n + 1))
				v=$(jq -r "$path // empty" "$CMP/$scen-$n-$side.json" 2>/dev/null || true)
				[ -z "$v" ] || v=$(awk -v v="$v" "$NUM"' BEGIN { print num(v) }')
				row+=" ${v:-—} |"
				[ -z "$v" ] || { if [ "$side" = base ]; then a+=("$v"); else b+=("$v"); fi; }
			done
			# shellcheck disable=SC2046 # stats prints three words
			set -- $(stats ${a[@]+"${a[@]}"}) $(stats ${b[@]+"${b[@]}"})
			row+=" $1 | $4 | $(awk -v a="$1" -v b="$4" 'BEGIN { if (a + 0 == 0 || b == "—") print "—"; else printf "%.3f", b / a }') |"
			row+=" $2 ($3) | $5 ($6) |"
			row+=" $(awk -v a="$1" -v b="$4" -v sa="$2" -v sb="$5" 'BEGIN {
				if (a == "—" || b == "—") { print "—"; exit }
				d = b - a; if (d < 0) d = -d; s = (sa > sb) ? sa : sb
				print (d <= s) ? "within" : "**beyond**" }') |"
			echo "$row"
		done < <(figures "$scen")
	done
}

mkdir -p "$(dirname "$OUT")"
table | tee "$OUT"
log "written to $OUT in $((SECONDS_TOTAL / 60)) min $((SECONDS_TOTAL % 60)) s"
