#!/usr/bin/env bash
# A journal whose fsync fails (a failing disk: EIO), then a crash before
# the plugin could rewrite it: the command of the failed turn is reported
# not sent, is never published, and its record is cut off the file, so the
# restart does not resume it. (tests/faultfs.c, preloaded into collectd,
# fails fsync on the journal's files while $T/failing exists.)
. "$top_srcdir/tests/integration/plant.sh"

shim=$top_builddir/tests/.libs/faultfs.so
[[ -f $shim ]] || bm_bail "$shim is not built (make check builds it)"
export BM_COLLECTD_PRELOAD=$shim BM_FAULT_MATCH=$T/plant1.journal \
  BM_FAULT_WHEN=$T/failing BM_FAULT_FSYNC_EIO=1

plant_token
bm_start_broker
bm_sub_start resource/commands 2
CMD_LOG=$SUB_LOG
bm_start_gwsim --secret-file "$T/secret" --delay 100
bm_start_collectd "$(plant_conf "JournalFile \"$T/plant1.journal\"
    JournalSync always
    MaxCommandsPerMinute 600")"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1
bm_notify failure sensors temperature "" "too hot"
bm_check "with a working disk, a command goes through" wait_val bool-pump 1 10
sent_before=$(count "$CMD_LOG" setExtDO)
bm_is "$sent_before" 1 "one command published so far"

# The disk fails: the next turn's fsync (and every rewrite's) fails.
touch "$T/failing"
bm_notify okay sensors temperature "" "cool"
bm_check "the failed fsync is an ERROR naming the journal" \
  bm_wait_log "$T/collectd.log" "cannot fsync the journal \"$T/plant1.journal\": Input/output error" 10
bm_check "the command fails with a FAILURE notification, not sent" \
  bm_wait_log "$T/collectd.log" 'Notification: severity = FAILURE, .*type_instance = pump, message = .*not sent: journal fsync failed' 10
failed_corr=$(unsent_corr)
bm_like "$failed_corr" '^[0-9a-f]{16}-[0-9]+$' "the failure names the command's correlationId ($failed_corr)"
bm_check "the plugin tries to rewrite the journal, which fails too" \
  bm_wait_log "$T/collectd.log" 'compaction of the journal .* failed' 10
bm_is "$(grep -caF "$failed_corr" "$T/plant1.journal")" 0 \
  "the failed turn's COMMAND record is cut off the journal"
bm_is "$(count "$CMD_LOG" "\"correlationId\":\"$failed_corr\"")" 0 "that command was never published"

# A crash before the disk recovers; then a restart on a working disk.
bm_kill_collectd
rm -f "$T/failing"
_bm_launch_collectd || bm_bail "collectd did not restart (see $T/collectd.log)"
bm_check "after the restart the plugin is connected again" bm_wait_for 10 val_is current_connections 1
bm_check "the restart restores the last confirmed state (pump on)" wait_val bool-pump 1 10
sleep 3 # a resumed command would go out at once, a retry within 2 s
bm_is "$(count "$CMD_LOG" setExtDO)" "$sent_before" \
  "no command went out after the restart: the failed one was not resumed"
bm_is "$(count "$CMD_LOG" "\"correlationId\":\"$failed_corr\"")" 0 "its correlationId never seen on the broker"
bm_is "$(grep -oE '[0-9]+ commands resumed' "$T/collectd.log" | tail -n 1)" \
  "0 commands resumed" "the restart's replay resumed no command"
bm_stop_collectd
bm_done
