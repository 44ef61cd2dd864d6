#!/usr/bin/env bash
# The journal's replay judges a correlationId as the live run did: an id
# shaped like the plugin's own ("<16 hex>-<n>") but numbered beyond any
# command it sent is someone else's, before a restart and after. (Replay
# once took it for the plugin's own command n: the relay's applied
# sequence jumped to n, and after the restart every late confirmation of
# the plugin's real commands was dropped as a duplicate, the relay's state
# misreported.)
. "$top_srcdir/tests/integration/plant.sh"

FOREIGN=0000000000000000-999999999
notif() { # STATUS CORRELATION_ID
  echo "{\"messageType\":\"notification\",\"appId\":\"flexyWattApp.1\",\"correlationId\":\"$2\",\"command\":\"setExtDO\",\"notificationType\":\"extDOStateChanged\",\"userName\":\"test\",\"userId\":12345,\"parameters\":{\"resourceId\":101,\"output\":4,\"status\":$1}}"
}

plant_token
bm_start_broker
bm_sub_start resource/commands 2
CMD_LOG=$SUB_LOG
# Answers every command (commandResponse "sent") and confirms none: the
# test publishes the notifications itself.
bm_start_gwsim --secret-file "$T/secret" --no-notify --delay 0
bm_start_collectd "$(plant_conf "JournalFile \"$T/plant1.journal\"
    CommandTimeout 1
    Retries 0")"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1

# Someone else switches the pump on, with an id shaped like ours.
bm_pub "$APP_TOPIC" "$(notif 1 "$FOREIGN")" 1
bm_check "the foreign change is applied (pump on)" wait_val bool-pump 1 10
bm_check "... as someone else's change (operations-unsolicited 1)" \
  wait_val operations-unsolicited 1 15

bm_restart_collectd
bm_check "after a restart the plugin is connected again" bm_wait_for 10 val_is current_connections 1
bm_check "the journal restores pump on" wait_val bool-pump 1 10

# A command of ours (pump off) that times out unconfirmed...
bm_notify okay sensors temperature "" "cool"
bm_check "a command to switch the pump off is published" \
  bm_wait_for 10 eval '(($(count "$CMD_LOG" "\"status\":0") >= 1))'
corr=$(grep -oE '"correlationId":"[^"]+"' "$CMD_LOG" | tail -n 1 | cut -d'"' -f4)
bm_like "$corr" '^[0-9a-f]{16}-[0-9]+$' "its correlationId is ours ($corr)"
bm_check "it times out unconfirmed" \
  bm_wait_log "$T/collectd.log" "correlationId \"$corr\", attempt 1\\) ended: no notification within 1 s" 10
# ... and is confirmed late: the device did switch.
bm_pub "$APP_TOPIC" "$(notif 0 "$corr")" 1
bm_check "the late confirmation is applied: the pump is off" wait_val bool-pump 0 10
bm_is "$(count "$T/collectd.log" "already applied: duplicate")" 0 "nothing was dropped as a duplicate"
bm_stop_collectd
bm_done
