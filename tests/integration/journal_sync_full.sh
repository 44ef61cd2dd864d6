#!/usr/bin/env bash
# JournalSync full: a turn that applied a notification (its CONFIRM record,
# no command) is fsync'd before the turn ends, where JournalSync always
# fsyncs only turns with commands; a failing fsync then costs no state: the
# relay is switched, an ERROR names the journal, and the rewrite from the
# table restores it once the disk works again, so a crash keeps it.
# (tests/faultfs.c, preloaded into collectd, counts the journal's fsyncs in
# $T/fsyncs and fails them while $T/failing exists.)
. "$top_srcdir/tests/integration/plant.sh"

shim=$top_builddir/tests/.libs/faultfs.so
[[ -f $shim ]] || bm_bail "$shim is not built (make check builds it)"
export BM_COLLECTD_PRELOAD=$shim BM_FAULT_MATCH=$T/plant1.journal \
  BM_FAULT_WHEN=$T/failing BM_FAULT_FSYNC_EIO=1 BM_FAULT_FSYNC_COUNT=$T/fsyncs

fsyncs() { count "$T/fsyncs" .; }
fan() { # fan STATUS: an unsolicited change of the fan, published at QoS 1
  bm_pub "$APP_TOPIC" "{\"messageType\":\"notification\",\"appId\":\"flexyWattApp.1\",\"notificationType\":\"extDOStateChanged\",\"parameters\":{\"resourceId\":102,\"output\":1,\"status\":$1}}" 1
}
# settle: waits until the fsync count has not moved for a second.
settle() {
  local before
  for _ in $(seq 20); do
    before=$(fsyncs)
    sleep 1
    [[ $(fsyncs) == "$before" ]] && return 0
  done
  return 1
}

plant_token
bm_start_broker

# JournalSync always: a notification's turn is not fsync'd.
bm_start_collectd "$(plant_conf "JournalFile \"$T/plant1.journal\"
    JournalSync always")"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1
settle
before=$(fsyncs)
fan 1
bm_check "JournalSync always: the notification switches the fan on" wait_val bool-fan 1 10
settle
bm_is "$(fsyncs)" "$before" "JournalSync always: its turn made no fsync"
bm_stop_collectd

# JournalSync full: every turn that wrote a record is fsync'd, once.
bm_start_collectd "$(plant_conf "JournalFile \"$T/plant1.journal\"
    JournalSync full")"
bm_check "JournalSync full: the plugin is connected again" bm_wait_for 10 val_is current_connections 1
bm_check "the fan's state is restored (on)" wait_val bool-fan 1 10
settle
before=$(fsyncs)
fan 0
bm_check "JournalSync full: the notification switches the fan off" wait_val bool-fan 0 10
settle
bm_is "$(fsyncs)" "$((before + 1))" "JournalSync full: its turn made exactly one fsync"
bm_is "$(count "$T/collectd.log" 'cannot fsync')" 0 "no fsync failed so far"

# The disk fails: the next notification's fsync fails.
touch "$T/failing"
fan 1
bm_check "with a failing fsync the notification still switches the fan on" \
  wait_val bool-fan 1 10
bm_check "the failed fsync is an ERROR naming the journal" \
  bm_wait_log "$T/collectd.log" "cannot fsync the journal \"$T/plant1.journal\": Input/output error" 10
bm_check "the rewrite from the table fails too while the disk fails" \
  bm_wait_log "$T/collectd.log" 'compaction of the journal .* failed' 10
bm_is "$(count "$T/collectd.log" 'dropped a message')" 0 "no message dropped"
rm -f "$T/failing"
bm_check "once the disk works, the journal is rewritten from the table" \
  bm_wait_log "$T/collectd.log" "journal \"$T/plant1.journal\" compacted from" 10

# A crash, then a restart: the rewritten journal has the fan on.
bm_kill_collectd
_bm_launch_collectd || bm_bail "collectd did not restart (see $T/collectd.log)"
bm_check "after the crash the plugin is connected again" bm_wait_for 10 val_is current_connections 1
bm_check "the restart restores the fan's last state (on)" wait_val bool-fan 1 10
bm_stop_collectd
bm_is $? 0 "collectd shuts down cleanly"
bm_done
