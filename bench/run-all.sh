#!/usr/bin/env bash
# make bench: every benchmark scenario in turn, then bench/RESULTS.md.
#
#   micro         go test -run '^$' -bench . -benchmem ./proto/ ./engine/ ./shm/ ./store/
#                 (raw output: bench/results/micro.txt)
#   idle          bash bench/run-idle.sh
#   fanout-1000   SUBS=1000 bash bench/run-fanout.sh
#   fanout-5000   SUBS=5000 bash bench/run-fanout.sh
#   fanout-15000  SUBS=15000 PROCS=2 bash bench/run-fanout.sh
#   churn         bash bench/run-churn.sh    (skipped while the script does not exist)
#   static        bash bench/run-static.sh   (wrk and nginx: bench/ensure-tools.sh first)
#   audit         bash bench/run-audit.sh
#   scale         bash bench/run-scale.sh
#   cluster       bash bench/run-cluster.sh  (nats-server and Centrifugo:
#                 bench/ensure-tools.sh cluster first)
#   tls           bash bench/run-tls.sh      (nginx and Centrifugo:
#                 bench/ensure-tools.sh static cluster first)
#
# Each scenario's JSON goes to bench/results/NAME.json, inside an envelope
# made by bench/report (the command, start time, duration, commit, exit
# status; the script's JSON is under "result"), its stderr to
# bench/results/NAME.log. A scenario that fails is recorded as failed, with
# the end of its log and its last successful result, and the next one runs.
# Then bench/report rewrites bench/RESULTS.md from every JSON in
# bench/results/, measured now or earlier (each says when).
#
# Usage: bash bench/run-all.sh   (make bench)
#   ONLY="idle fanout"  run only these (fanout = the three subscriber counts;
#                       also fanout-5000 etc., micro, churn, static, audit, scale,
#                       cluster, tls)
#   ROUNDS, DURATION    passed to every scenario script that takes them
#                       (run-idle.sh takes no DURATION, run-scale.sh no ROUNDS)
#   SUBS, NODES         passed to the cluster scenario (and written in its command)
#   BENCHTIME           -benchtime of the micro-benchmarks (default: go test's, 1s)
#   LOG_TAIL            lines of a failed scenario's log kept in its JSON (40)
# Exit status: 0 when every scenario run succeeded (skipped ones aside), 1
# otherwise, 2 for a bad ONLY.
set -uo pipefail
cd "$(dirname "$0")/.."

ALL=(micro idle fanout-1000 fanout-5000 fanout-15000 churn static audit scale cluster tls)
RESULTS=bench/results
: "${ONLY:=}" "${LOG_TAIL:=40}" "${BENCHTIME:=}"

log() { printf '[run-all %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- which scenarios --------------------------------------------------------
declare -A want=()
if [ -z "$ONLY" ]; then
	for s in "${ALL[@]}"; do want[$s]=1; done
else
	read -r -a words <<<"${ONLY//,/ }"
	for w in ${words[@]+"${words[@]}"}; do
		case $w in
		fanout) want[fanout-1000]=1 want[fanout-5000]=1 want[fanout-15000]=1 ;;
		micro | idle | fanout-1000 | fanout-5000 | fanout-15000 | churn | static | audit | scale | cluster | tls) want[$w]=1 ;;
		*)
			log "unknown scenario in ONLY: $w (known: fanout ${ALL[*]})"
			exit 2
			;;
		esac
	done
fi
selected=()
for s in "${ALL[@]}"; do [ -z "${want[$s]:-}" ] || selected+=("$s"); done
[ ${#selected[@]} -gt 0 ] || { log "ONLY selects nothing"; exit 2; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/zenconn-run-all.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
trap 'log "interrupted"; exit 130' INT TERM
mkdir -p "$RESULTS"

log "building bench/report"
go build -o "$TMP/report" ./bench/report || { log "cannot build bench/report"; exit 1; }
REPORT=$TMP/report
GIT=$(git rev-parse --short HEAD 2>/dev/null || echo none)
"$REPORT" machine --scenarios "${selected[*]}" >"$TMP/machine.json" && mv "$TMP/machine.json" "$RESULTS/machine.json"
log "scenarios: ${selected[*]} (commit $GIT, loadavg $(cut -d' ' -f1-3 /proc/loadavg))"

failed=()
skipped=()
succeeded=()

# record NAME COMMAND RC STARTED [WRAP ARGS...]: the envelope of a run into
# bench/results/NAME.json, through a temporary file so that a bad write
# keeps the previous one. report wrap exits 3 when the run failed (a non-zero
# exit, or no JSON on its stdout): the envelope is written all the same.
record() {
	local name=$1 cmd=$2 rc=$3 started=$4 wrc=0
	shift 4
	"$REPORT" wrap --name "$name" --command "$cmd" --started "$started" --exit "$rc" --git "$GIT" \
		--log "$RESULTS/$name.log" --tail "$LOG_TAIL" --previous "$RESULTS/$name.json" "$@" >"$TMP/$name.json" || wrc=$?
	case $wrc in
	0 | 3) mv "$TMP/$name.json" "$RESULTS/$name.json" ;;
	*) log "$name: could not write its results file (report wrap exit $wrc)" ;;
	esac
	if [ "$wrc" = 0 ]; then
		succeeded+=("$name")
		log "$name: ok -> $RESULTS/$name.json"
	else
		failed+=("$name")
		log "$name: FAILED (exit $rc), recorded in $RESULTS/$name.json; log: $RESULTS/$name.log"
	fi
}

# scenario NAME SCRIPT PASS [VAR=VALUE...]: runs SCRIPT with those settings
# plus those of PASS ("ROUNDS DURATION": the ones it takes) that are set,
# its stdout to the results, its stderr to the log and to our stderr.
scenario() {
	local name=$1 script=$2 pass=$3 started rc
	shift 3
	local vars=() envargs=() v
	for v in $pass; do
		[ -z "${!v:-}" ] || vars+=("$v=${!v}")
	done
	vars+=("$@")
	if [ ! -f "$script" ]; then
		log "$name: $script does not exist: skipped"
		skipped+=("$name")
		return 0
	fi
	for v in ${vars[@]+"${vars[@]}"}; do envargs+=(--env "$v"); done
	local cmd="${vars[*]}${vars[*]:+ }bash $script"
	log "$name: $cmd"
	started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	env ${vars[@]+"${vars[@]}"} bash "$script" 2>&1 >"$TMP/$name.out" </dev/null | tee "$RESULTS/$name.log" >&2
	rc=${PIPESTATUS[0]}
	record "$name" "$cmd" "$rc" "$started" --stdout "$TMP/$name.out" ${envargs[@]+"${envargs[@]}"}
}

# micro: the micro-benchmarks; raw output to bench/results/micro.txt (kept
# from the last successful run when this one fails).
micro() {
	local started rc pkgs=(./proto/ ./engine/ ./engine/static/ ./shm/ ./store/) flags=(-run '^$' -bench . -benchmem)
	[ -z "$BENCHTIME" ] || flags+=(-benchtime "$BENCHTIME")
	local cmd="go test -run '^\$' -bench . -benchmem${BENCHTIME:+ -benchtime $BENCHTIME} ${pkgs[*]}"
	log "micro: $cmd"
	started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	go test "${flags[@]}" "${pkgs[@]}" </dev/null 2>&1 | tee "$TMP/micro.txt" "$RESULTS/micro.log" >&2
	rc=${PIPESTATUS[0]}
	[ "$rc" != 0 ] || cp "$TMP/micro.txt" "$RESULTS/micro.txt"
	record micro "$cmd" "$rc" "$started" --bench-text "$TMP/micro.txt"
}

if [ -n "${want[static]:-}${want[tls]:-}" ]; then
	log "bash bench/ensure-tools.sh (wrk and nginx for the static and tls scenarios)"
	bash bench/ensure-tools.sh || log "ensure-tools.sh failed (exit $?): the static scenario will say why"
fi
if [ -n "${want[cluster]:-}${want[tls]:-}" ]; then
	log "bash bench/ensure-tools.sh cluster (nats-server and Centrifugo for the cluster and tls scenarios)"
	bash bench/ensure-tools.sh cluster || log "ensure-tools.sh cluster failed (exit $?): the cluster scenario will say why"
fi

for s in "${selected[@]}"; do
	case $s in
	micro) micro ;;
	idle) scenario idle bench/run-idle.sh ROUNDS ;;
	fanout-1000) scenario fanout-1000 bench/run-fanout.sh "ROUNDS DURATION" SUBS=1000 ;;
	fanout-5000) scenario fanout-5000 bench/run-fanout.sh "ROUNDS DURATION" SUBS=5000 ;;
	# 15,000 subscribers: two generator processes. (run-fanout.sh takes no
	# SOURCE_IPS and needs none: one source address has ~28,000 ports.)
	fanout-15000) scenario fanout-15000 bench/run-fanout.sh "ROUNDS DURATION" SUBS=15000 PROCS=2 ;;
	churn) scenario churn bench/run-churn.sh "ROUNDS DURATION" ;;
	static) scenario static bench/run-static.sh "ROUNDS DURATION" ;;
	audit) scenario audit bench/run-audit.sh "ROUNDS DURATION" ;;
	# The report's scale figures: memory, and the fan-out at full speed.
	scale) scenario scale bench/run-scale.sh DURATION PHASES=idle,fanout RATE=0 DRAIN=5s ;;
	cluster) scenario cluster bench/run-cluster.sh "ROUNDS DURATION SUBS NODES" ;;
	tls) scenario tls bench/run-tls.sh "ROUNDS DURATION" ;;
	esac
done

log "rendering bench/RESULTS.md"
render_rc=0
"$REPORT" render --results "$RESULTS" --notes bench/notes --scripts bench --out bench/RESULTS.md || render_rc=$?
log "done: ok: ${succeeded[*]:-none}; failed: ${failed[*]:-none}; skipped: ${skipped[*]:-none}"
[ "$render_rc" = 0 ] || { log "bench/report failed (exit $render_rc)"; exit 1; }
[ ${#failed[@]} = 0 ] || exit 1
exit 0
