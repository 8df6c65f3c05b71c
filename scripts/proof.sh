#!/usr/bin/env bash
# The seed's five proof cases A–E, run against a live redis-server with HeatBridge loaded:
#   A  basic injection: by_plan (every field, TTL 1795-1800 s), latest and latest_plan_id
#   B  dedupe: the same plan_id again is skipped and counted
#   C  a new plan_id for the same symbol moves latest and latest_plan_id
#   D  /metrics answers with the seed's series, and they moved by the injections
#   E  /health answers status ok, last_ts_epoch, last_loop_ms and backlog 0
# Exits 0 when every check passes, 1 otherwise (a server without the module fails).
#
# Environment (defaults in brackets):
#   REDIS_HOST [localhost]  REDIS_PORT [6379]  REDISCLI_AUTH (password, read by redis-cli)
#   P27_METRICS_PORT [8070]  P27_HEALTH_PORT [8071]  P27_HTTP_HOST [REDIS_HOST]
#   PROOF_SYMBOL [P27PROOFUSDT]: the symbol whose latest keys the proof overwrites; keep it
#     off the symbols that production readers use
#   PROOF_TIMEOUT [2]: seconds to wait for a key or a metric to change
# Every run uses fresh plan_ids, and metrics are compared as deltas, so runs can repeat.
# Needs bash, redis-cli and curl.
set -uo pipefail

REDIS_HOST="${REDIS_HOST:-localhost}"
REDIS_PORT="${REDIS_PORT:-6379}"
METRICS_PORT="${P27_METRICS_PORT:-8070}"
HEALTH_PORT="${P27_HEALTH_PORT:-8071}"
HTTP_HOST="${P27_HTTP_HOST:-$REDIS_HOST}"
SYMBOL="${PROOF_SYMBOL:-P27PROOFUSDT}"
TIMEOUT="${PROOF_TIMEOUT:-2}"

STREAM="quantum:stream:harvest.heat.decision"
BY_PLAN="quantum:harvest:heat:by_plan:"
LATEST="quantum:harvest:heat:latest:"
POINTER="quantum:harvest:heat:latest_plan_id:"
FIELDS=(ts_epoch symbol plan_id in_action out_action heat_level heat_score heat_action
  recommended_partial reason inputs_age_sec mode debug_json)

RUN_ID="$(date +%s)_$$_${RANDOM}"
PLAN_A="proof_a_${RUN_ID}"
PLAN_C="proof_c_${RUN_ID}"
PASSED=0
FAILED=0
FAILED_CASES=""

for tool in redis-cli curl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "proof.sh: $tool is required (scripts/setup.sh installs it)" >&2
    exit 1
  fi
done

rcli() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" "$@" 2>/dev/null; }

pass() { echo "✅ PASS: $1"; PASSED=$((PASSED + 1)); }
fail() {
  echo "❌ FAIL: $1"
  FAILED=$((FAILED + 1))
  case " $FAILED_CASES " in *" $2 "*) ;; *) FAILED_CASES="${FAILED_CASES:+$FAILED_CASES }$2" ;; esac
}
check() { # check <case> <condition-result 0/1> <pass message> <fail message>
  if [ "$2" -eq 0 ]; then pass "Test $1: $3"; else fail "Test $1: $4" "$1"; fi
}

# Polls "$@" every 50 ms until it succeeds or PROOF_TIMEOUT seconds have passed.
wait_until() {
  local deadline=$(($(date +%s%N) + TIMEOUT * 1000000000))
  until "$@"; do
    [ "$(date +%s%N)" -lt "$deadline" ] || return 1
    sleep 0.05
  done
}

# The 13 seed fields of a proof decision, as XADD arguments: <plan_id> <out_action> <heat_level>.
decision_args() {
  local plan="$1" out_action="$2" heat_level="$3"
  DECISION=(
    ts_epoch "$(date +%s)" symbol "$SYMBOL" plan_id "$plan"
    in_action FULL_CLOSE_PROPOSED out_action "$out_action" heat_level "$heat_level"
    heat_score 0.5 heat_action DOWNGRADE_FULL_TO_PARTIAL recommended_partial 0.5
    reason proof inputs_age_sec 3 mode shadow debug_json '{"source":"scripts/proof.sh"}'
  )
}

inject() { # inject <plan_id> <out_action> <heat_level>; prints the entry ID
  decision_args "$@"
  rcli XADD "$STREAM" '*' "${DECISION[@]}"
}

key_exists() { [ "$(rcli EXISTS "$1")" = "1" ]; }
pointer_is() { [ "$(rcli GET "$POINTER$SYMBOL")" = "$1" ]; }

METRICS_TEXT=""
fetch_metrics() {
  METRICS_TEXT="$(curl -sf --max-time 3 "http://$HTTP_HOST:$METRICS_PORT/metrics")"
}
# The value of one sample (name with labels) in METRICS_TEXT, or empty.
sample() { awk -v n="$1" '$1 == n { print $2; exit }' <<<"$METRICS_TEXT"; }
# Integer delta of a counter between two samples; empty when either is missing.
delta() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", b - a }'; }

dedupe_moved() {
  fetch_metrics || return 1
  local now
  now="$(sample p27_dedupe_skips_total)"
  [ -n "$now" ] && [ -n "$DEDUPE_BEFORE" ] && [ "$(delta "$DEDUPE_BEFORE" "$now")" -ge 1 ]
}

HEALTH_CODE=""
HEALTH_BODY=""
fetch_health() {
  local out
  out="$(curl -s --max-time 3 -w '\n%{http_code}' "http://$HTTP_HOST:$HEALTH_PORT/health")" || {
    HEALTH_CODE=""
    HEALTH_BODY=""
    return 1
  }
  HEALTH_CODE="${out##*$'\n'}"
  HEALTH_BODY="${out%$'\n'*}"
}
# A top-level JSON field of HEALTH_BODY as raw text ("ok" without quotes, 0, null), or empty.
health_field() {
  sed -nE "s/.*\"$1\"[[:space:]]*:[[:space:]]*(\"([^\"]*)\"|([-0-9.eE+]+|null|true|false)).*/\2\3/p" \
    <<<"$HEALTH_BODY"
}
health_settled() {
  fetch_health && [ "$(health_field status)" = "ok" ] && [ "$(health_field backlog)" = "0" ]
}

echo "===================================================================="
echo "P2.7 HeatBridge Proof: the heatbridge module in redis-server"
echo "===================================================================="
echo "   Redis $REDIS_HOST:$REDIS_PORT, metrics :$METRICS_PORT, health :$HEALTH_PORT," \
  "symbol $SYMBOL, run $RUN_ID"
if [ "$(rcli PING)" != "PONG" ]; then
  echo "   ⚠️  Redis does not answer PING at $REDIS_HOST:$REDIS_PORT"
elif ! rcli HEATBRIDGE.HEALTH | grep -q '"status"'; then
  echo "   ⚠️  HEATBRIDGE.HEALTH is not answered: is the heatbridge module loaded?"
fi
fetch_metrics
IN_BEFORE="$(sample p27_in_messages_total)"
BY_PLAN_BEFORE="$(sample 'p27_written_total{kind="by_plan"}')"
LATEST_BEFORE="$(sample 'p27_written_total{kind="latest_symbol"}')"

echo
echo "[A] Test: Basic injection → lookup keys created"
# inject runs in this shell, so DECISION still holds the exact arguments it sent (ts_epoch
# included: recomputing it could cross a second boundary).
inject "$PLAN_A" FULL_CLOSE_PROPOSED warm >/dev/null
EXPECTED_A=("${DECISION[@]}")
if wait_until key_exists "$BY_PLAN$PLAN_A"; then
  mapfile -t got < <(rcli HMGET "$BY_PLAN$PLAN_A" "${FIELDS[@]}")
  bad=""
  for i in "${!FIELDS[@]}"; do
    [ "${got[$i]:-}" = "${EXPECTED_A[$((2 * i + 1))]}" ] || bad="$bad ${FIELDS[$i]}"
  done
  nfields="$(rcli HLEN "$BY_PLAN$PLAN_A")"
  check A "$([ -z "$bad" ] && [ "$nfields" = "13" ]; echo $?)" \
    "by_plan key created with correct fields (13/13)" \
    "by_plan key fields differ:${bad:- none} (HLEN $nfields, want 13)"
else
  fail "Test A: by_plan key $BY_PLAN$PLAN_A not created within ${TIMEOUT}s" A
fi
ttl_a="$(rcli TTL "$BY_PLAN$PLAN_A")"
check A "$([ "${ttl_a:--2}" -ge 1795 ] 2>/dev/null && [ "$ttl_a" -le 1800 ]; echo $?)" \
  "by_plan key has TTL=$ttl_a" "by_plan TTL=${ttl_a:-?}, want 1795-1800"
last_a="$(rcli HGET "$LATEST$SYMBOL" last_plan_id)"
check A "$([ "$last_a" = "$PLAN_A" ]; echo $?)" \
  "latest_symbol key created with last_plan_id=$last_a" \
  "latest_symbol last_plan_id='$last_a', want $PLAN_A"
ptr_a="$(rcli GET "$POINTER$SYMBOL")"
check A "$([ "$ptr_a" = "$PLAN_A" ]; echo $?)" \
  "latest_plan_id pointer created with value=$ptr_a" \
  "latest_plan_id pointer='$ptr_a', want $PLAN_A"

echo
echo "[B] Test: Deduplication → same plan_id not rewritten"
fetch_metrics
DEDUPE_BEFORE="$(sample p27_dedupe_skips_total)"
inject "$PLAN_A" FULL_CLOSE_PROPOSED hot >/dev/null
if wait_until dedupe_moved; then
  pass "Test B: Deduplication working (p27_dedupe_skips_total $DEDUPE_BEFORE → $(sample p27_dedupe_skips_total))"
else
  fail "Test B: p27_dedupe_skips_total did not increase (before '${DEDUPE_BEFORE}', now '$(sample p27_dedupe_skips_total)')" B
fi
level="$(rcli HGET "$BY_PLAN$PLAN_A" heat_level)"
check B "$([ "$level" = "warm" ]; echo $?)" \
  "second injection skipped: by_plan keeps heat_level=warm" \
  "by_plan heat_level='$level' after the duplicate, want warm"

echo
echo "[C] Test: New plan_id for same symbol updates latest pointer"
inject "$PLAN_C" PARTIAL_50_PROPOSED warm >/dev/null
wait_until pointer_is "$PLAN_C"
ptr_c="$(rcli GET "$POINTER$SYMBOL")"
check C "$([ "$ptr_c" = "$PLAN_C" ]; echo $?)" \
  "latest_plan_id pointer updated to new plan_id=$ptr_c" \
  "latest_plan_id pointer='$ptr_c', want $PLAN_C"
last_c="$(rcli HGET "$LATEST$SYMBOL" last_plan_id)"
out_c="$(rcli HGET "$LATEST$SYMBOL" out_action)"
check C "$([ "$last_c" = "$PLAN_C" ] && [ "$out_c" = "PARTIAL_50_PROPOSED" ]; echo $?)" \
  "latest_symbol key updated with last_plan_id=$last_c, out_action=$out_c" \
  "latest_symbol last_plan_id='$last_c' out_action='$out_c', want $PLAN_C PARTIAL_50_PROPOSED"

echo
echo "[D] Verify HeatBridge metrics"
if fetch_metrics && grep -q '^# TYPE p27_' <<<"$METRICS_TEXT"; then
  pass "Test D: /metrics responds on :$METRICS_PORT"
else
  fail "Test D: /metrics on $HTTP_HOST:$METRICS_PORT does not respond with p27_ metrics" D
fi
in_now="$(sample p27_in_messages_total)"
d_in="$(delta "$IN_BEFORE" "$in_now")"
check D "$([ -n "$d_in" ] && [ "$d_in" -ge 3 ]; echo $?)" \
  "Metrics available (p27_in_messages_total=$in_now, +$d_in for 3 injections)" \
  "p27_in_messages_total '${IN_BEFORE}' → '${in_now}', want +3 or more"
bp_now="$(sample 'p27_written_total{kind="by_plan"}')"
ls_now="$(sample 'p27_written_total{kind="latest_symbol"}')"
d_bp="$(delta "$BY_PLAN_BEFORE" "$bp_now")"
d_ls="$(delta "$LATEST_BEFORE" "$ls_now")"
check D "$([ -n "$d_bp" ] && [ "$d_bp" -ge 2 ] && [ -n "$d_ls" ] && [ "$d_ls" -ge 2 ]; echo $?)" \
  "p27_written_total metric found (by_plan +$d_bp, latest_symbol +$d_ls for 2 new plan_ids)" \
  "p27_written_total by_plan '${BY_PLAN_BEFORE}' → '${bp_now}', latest_symbol '${LATEST_BEFORE}' → '${ls_now}', want +2 or more each"

echo
echo "[E] Verify HeatBridge health endpoint"
# Health is refreshed on the housekeeping tick (heatbridge.poll-ms): give it a few ticks.
TIMEOUT=$((TIMEOUT + 1)) wait_until health_settled
if [ -n "$HEALTH_CODE" ] && [ "$HEALTH_CODE" != "000" ]; then
  status="$(health_field status)"
  check E "$([ "$HEALTH_CODE" = "200" ] && [ "$status" = "ok" ]; echo $?)" \
    "Health endpoint responds with status=$status (HTTP $HEALTH_CODE)" \
    "Health endpoint: HTTP $HEALTH_CODE status='$status', want 200 ok"
  ts="$(health_field last_ts_epoch)"
  loop="$(health_field last_loop_ms)"
  check E "$([[ "$ts" =~ ^[0-9] ]] && [[ "$loop" =~ ^[0-9] ]]; echo $?)" \
    "last_ts_epoch=$ts and last_loop_ms=$loop present" \
    "last_ts_epoch='$ts' last_loop_ms='$loop', want numbers"
  backlog="$(health_field backlog)"
  check E "$([ "$backlog" = "0" ]; echo $?)" "backlog=0" "backlog='$backlog', want 0"
else
  fail "Test E: /health on $HTTP_HOST:$HEALTH_PORT does not respond" E
fi

echo
echo "===================================================================="
if [ "$FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]; then
  echo "✅ SUMMARY: PASS (all tests passed: $PASSED checks)"
  status=0
else
  echo "❌ SUMMARY: FAIL ($FAILED of $((PASSED + FAILED)) checks failed, in tests: $FAILED_CASES)"
  status=1
fi
echo "===================================================================="
exit "$status"
