#!/usr/bin/env bash
# An "on" command superseded by an "off" before anyone answered it may
# still reach the device: for CommandTimeout its relay counts as on for its
# Interlock although its newest command is "off". A restart meanwhile keeps
# that: from the journal's records (the "on" COMMAND, then the "off"
# COMMAND that superseded it), then from the snapshot the restart compacts
# them into; bimetri-ctl reads both the same way. doubt_restart.sh does
# the same for an "on" that timed out.
. "$top_srcdir/tests/integration/doubt.sh"

TIMES='AckTimeout 20
    CommandTimeout 25
    Retries 0
    ManualControl true'

# refused_with_off WHEN: ctl_refuses, and bimetri-ctl status says the
# pump's last command is the "off".
refused_with_off() {
  ctl_refuses "$1"
  bm_like "$(grep -A4 '^relay "pump"' "$T/status.out")" "last command: off at .*\"$off\"" \
    "$1: and that its last command is the \"off\" ($off)"
}

doubt_start "$TIMES"

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
refused_with_off "the journal's records"

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
  refused_with_off "restart $round"
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
