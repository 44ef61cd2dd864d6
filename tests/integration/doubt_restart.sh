#!/usr/bin/env bash
# An "on" command that ended unconfirmed (nobody answered: timed out) may
# still reach the device: for CommandTimeout its relay counts as on for its
# Interlock, and a restart meanwhile keeps that (the journal's records, and
# the snapshot the restart compacts them into): the partner stays refused,
# by the plugin and by bimetri-ctl, until the doubt is over.
. "$top_srcdir/tests/integration/doubt.sh"

TIMES='AckTimeout 2
    CommandTimeout 25
    Retries 0
    ManualControl true'

doubt_start "$TIMES"

# The pump's "on" goes out and times out unanswered.
bm_notify failure sensors temperature "" "too hot"
bm_check "the pump's on command was published" bm_wait_log "$CMD_LOG" '"status":1}}$' 10
x=$(corr_of "$(grep '"status":1}}$' "$CMD_LOG" | tail -1)")
bm_check "it times out" \
  bm_wait_log "$T/collectd.log" "command to switch relay \"pump\" on \\(correlationId \"$x\", attempt 1\\) ended: no commandResponse within 2 s" 10
ended=$EPOCHREALTIME

mark=$(log_mark)
manual fan on
bm_check "the fan's manual on is refused: the pump's on may still arrive" fan_refused "$mark"
bm_stop_collectd
bm_ok $? "collectd stops cleanly"

ctl_refuses "the journal's records"
bm_is "$(grep -A3 '^relay "fan"' "$T/status.out" | grep -c 'perhaps on')" 0 "and nothing of the kind for the fan"
RC=0
timeout 60 "$CTL" -C "$T/collectd.conf" --json status >"$T/status.json" 2>"$T/status.err" || RC=$?
bm_like "$(grep '"relay":"pump"' "$T/status.json")" '"onInDoubtUntil":"[0-9T:+-]+"' \
  "the JSON line of the pump has onInDoubtUntil"
bm_like "$(grep '"relay":"fan"' "$T/status.json")" '"onInDoubtUntil":null' \
  "the fan's is null"

# Two restarts: the first replays the records, the second the snapshot the
# first compacted them into.
for round in 1 2; do
  mark=$(log_mark)
  bm_start_collectd "$(plant_conf "$TIMES" "$INTERLOCK")"
  bm_like "$(log_from "$mark" | grep 'records replayed')" '0 commands resumed, 1 ended "on" commands in doubt' \
    "restart $round: the replay restores the pump's doubt"
  bm_check "restart $round: connected" bm_wait_for 10 val_is current_connections 1
  manual fan on
  bm_check "restart $round: the fan's manual on is still refused" fan_refused "$mark"
  bm_stop_collectd
  bm_ok $? "restart $round: collectd stops cleanly"
done
bm_is "$(fan_commands)" 0 "no command to switch the fan on went out"

RC=0
timeout 60 "$CTL" -C "$T/collectd.conf" status --history >"$T/history.out" 2>"$T/history.err" || RC=$?
bm_is "$RC" 0 "bimetri-ctl status --history reads the compacted journal ($(head -c 200 "$T/history.err"))"
bm_like "$(grep -E '^[0-9]{4}-' "$T/history.out" | grep -F "\"$x\"" | tail -2 | tr '\n' '|')" \
  "^[^ ]+ command +relay \"pump\" .*\"$x\".*\\|[^ ]+ timeout +relay \"pump\" correlationId \"$x\"\\|\$" \
  "the snapshot keeps the pump's command and its timeout"

# Once CommandTimeout has passed since the timeout, the fan may go on.
mark=$(log_mark)
bm_start_collectd "$(plant_conf "$TIMES" "$INTERLOCK")"
bm_check "connected once more" bm_wait_for 10 val_is current_connections 1
wait_s=$(awk -v e="$ended" -v n="$EPOCHREALTIME" 'BEGIN { w = e + 25.5 - n; print (w > 0 ? w : 0) }')
sleep "$wait_s"
manual fan on
bm_check "after the doubt, the fan's manual on goes out" bm_wait_for 10 bash -c "grep -q '\"resourceId\":102,\"output\":1,\"status\":1' '$CMD_LOG'"
bm_is "$(log_from "$mark" | grep -cE "refused: $DOUBT")" 0 "and nothing was refused this time"
bm_check "the token appears in no log, output or metric" no_secret_leaked
bm_done
