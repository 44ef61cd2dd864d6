#!/usr/bin/env bash
# An "on" command superseded by an "off" before anyone answered it may
# still reach the device: for CommandTimeout its relay counts as on for its
# Interlock although its newest command is "off". A restart meanwhile keeps
# that: from the journal's records (the "on" COMMAND, then the "off"
# COMMAND that superseded it), then from the snapshot the restart compacts
# them into; bimetri-ctl reads both the same way. doubt_restart.sh does
# the same for an "on" that timed out.
. "$top_srcdir/tests/integration/plant.sh"

TIMES='AckTimeout 20
    CommandTimeout 25
    Retries 0
    ManualControl true'
INTERLOCK='Interlock "plant1" "pump" "fan"'
CTL=$top_builddir/bimetri-ctl
DOUBT='interlocked with relay "pump", whose unconfirmed "on" command may still reach it for [0-9]+ s'

fan_commands() { count "$CMD_LOG" '"resourceId":102,"output":1,"status":1'; }
# fan_refused MARK: waits for the manual "on" of the fan to be refused,
# since log line MARK, because of the pump's doubt.
fan_refused() {
  local mark=$1 i
  for ((i = 0; i < 50; i++)); do
    log_from "$mark" | grep -qE "manual command \"on\" for relay \"fan\" refused: $DOUBT" && return 0
    sleep 0.1
  done
  return 1
}
# ctl_refuses WHEN: bimetri-ctl, reading the journal collectd left, refuses
# the fan's "on" and says the pump is perhaps on.
ctl_refuses() {
  local rc=0
  timeout 60 "$CTL" -C "$T/collectd.conf" set fan on >"$T/set.out" 2>"$T/set.err" || rc=$?
  bm_is "$rc" 9 "$1: bimetri-ctl set fan on is refused by the Interlock: exit 9 ($(head -c 300 "$T/set.err"))"
  bm_like "$(<"$T/set.err")" 'relay "fan" may not be on together with relay "pump", which is perhaps on \(an unconfirmed "on" command may still reach it\)' \
    "$1: bimetri-ctl says why"
  rc=0
  timeout 60 "$CTL" -C "$T/collectd.conf" status >"$T/status.out" 2>"$T/status.err" || rc=$?
  bm_is "$rc" 0 "$1: bimetri-ctl status reads the journal ($(head -c 200 "$T/status.err"))"
  bm_like "$(grep -A4 '^relay "pump"' "$T/status.out")" \
    'perhaps on until [0-9T:+-]+: an "on" command ended unconfirmed' \
    "$1: bimetri-ctl status says the pump is perhaps on"
  bm_like "$(grep -A4 '^relay "pump"' "$T/status.out")" "\"$off\"" \
    "$1: and that its last command is the \"off\" ($off)"
}

plant_token
bm_start_broker
bm_sub_start resource/commands 2
CMD_LOG=$SUB_LOG
# No gateway: nobody answers the pump's commands.
bm_start_collectd "$(plant_conf "$TIMES" "$INTERLOCK")"
bm_check "connected" bm_wait_for 10 val_is current_connections 1
bm_pub "$APP_TOPIC" "$(notif_json "" 101 4 0)" 1
bm_pub "$APP_TOPIC" "$(notif_json "" 102 1 0)" 1
bm_check "the pump is known off" wait_val bool-pump 0 10
bm_check "the fan is known off" wait_val bool-fan 0 10

# The pump's "on" goes out, then an "off" supersedes it, both unanswered.
bm_notify failure sensors temperature "" "too hot"
bm_check "the pump's on command was published" bm_wait_log "$CMD_LOG" '"resourceId":101,"output":4,"status":1}}$' 10
on=$(corr_of "$(grep '"resourceId":101,"output":4,"status":1}}$' "$CMD_LOG" | tail -1)")
manual pump off
bm_check "the pump's off command was published" bm_wait_log "$CMD_LOG" '"resourceId":101,"output":4,"status":0}}$' 10
off=$(corr_of "$(grep '"resourceId":101,"output":4,"status":0}}$' "$CMD_LOG" | tail -1)")
bm_check "the log says the on command ended, superseded, and may still arrive" \
  bm_wait_log "$T/collectd.log" "command to switch relay \"pump\" on \\(correlationId \"$on\", attempt 1\\) ended: superseded by a newer request; it may still reach the device" 10

mark=$(log_mark)
manual fan on
bm_check "the fan's manual on is refused: the pump's on may still arrive" fan_refused "$mark"
bm_stop_collectd
bm_ok $? "collectd stops cleanly"
ctl_refuses "the journal's records"

# Two restarts: the first replays the records, the second the snapshot the
# first compacted them into. The "off" is still pending, sent again.
for round in 1 2; do
  mark=$(log_mark)
  bm_start_collectd "$(plant_conf "$TIMES" "$INTERLOCK")"
  bm_like "$(log_from "$mark" | grep 'records replayed')" '1 commands resumed, 1 ended "on" commands in doubt' \
    "restart $round: the replay resumes the off and restores the on's doubt"
  bm_like "$(log_from "$mark" | grep "republished setExtDO relay \"pump\"")" \
    "status 0, correlationId \"$off\", attempt 1, origin \"resumed after restart: manual off from host testhost\"" \
    "restart $round: the off goes out again, its origin said to be resumed once"
  bm_check "restart $round: connected" bm_wait_for 10 val_is current_connections 1
  manual fan on
  bm_check "restart $round: the fan's manual on is still refused" fan_refused "$mark"
  bm_stop_collectd
  bm_ok $? "restart $round: collectd stops cleanly"
  ctl_refuses "restart $round"
done

# A Trigger's request (decided by the Gateway thread) supersedes the
# resumed "off" in turn, and the log says so too.
bm_start_collectd "$(plant_conf "$TIMES" "$INTERLOCK")"
bm_check "connected for the last time" bm_wait_for 10 val_is current_connections 1
bm_notify failure sensors temperature "" "too hot again"
bm_check "the Trigger's on supersedes the resumed off, and the log says so" \
  bm_wait_log "$T/collectd.log" "command to switch relay \"pump\" off \\(correlationId \"$off\", attempt 1\\) ended: superseded by a newer request\$" 10
bm_stop_collectd
bm_ok $? "collectd stops cleanly at last"
bm_is "$(fan_commands)" 0 "no command to switch the fan on went out"
bm_is "$(count "$CMD_LOG" "\"correlationId\":\"$on\"")" 1 "the superseded on was never sent again"
bm_check "the token appears in no log, output or metric" no_secret_leaked
bm_done
