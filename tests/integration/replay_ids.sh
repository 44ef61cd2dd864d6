#!/usr/bin/env bash
# The journal's replay judges a correlationId as the live run did: an id
# shaped like the plugin's own ("<16 hex>-<n>") but numbered beyond any
# command it sent is someone else's, before a restart and after; so is
# the id of another relay's command. (Replay
# once took it for the plugin's own command n: the relay's applied
# sequence jumped to n, and after the restart every late confirmation of
# the plugin's real commands was dropped as a duplicate, the relay's state
# misreported.)
. "$top_srcdir/tests/integration/plant.sh"

FOREIGN=0000000000000000-999999999

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
bm_pub "$APP_TOPIC" "$(notif_json "$FOREIGN" 101 4 1)" 1
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
bm_pub "$APP_TOPIC" "$(notif_json "$corr" 101 4 0)" 1
bm_check "the late confirmation is applied: the pump is off" wait_val bool-pump 0 10
bm_is "$(count "$T/collectd.log" "already applied: duplicate")" 0 "nothing was dropped as a duplicate"

# A faulty report: the fan's state, naming the pump's command. The fan's
# state is applied as someone else's change, before a restart and after:
# so the fan's next change by hand is no drift from a command of ours.
bm_pub "$APP_TOPIC" "$(notif_json "$corr" 102 1 1)" 1
bm_check "the fan is on" wait_val bool-fan 1 10
bm_restart_collectd
bm_check "after another restart the plugin is connected again" bm_wait_for 10 val_is current_connections 1
bm_check "the journal restores the fan on" wait_val bool-fan 1 10
bm_pub "$APP_TOPIC" "$(notif_json "" 102 1 0)" 1
bm_check "the fan is switched off by hand" wait_val bool-fan 0 10
sleep 1
bm_is "$(count "$T/collectd.log" 'relay "fan" is off, but our last confirmed command')" 0 \
  "no relay_drift: the fan's state never came from a command of ours"

# A late answer to the pump's command of the run before: ours, no longer
# followed after the restart, so no fault to warn about.
bm_pub "$APP_TOPIC" "{\"messageType\":\"commandResponse\",\"correlationId\":\"$corr\",\"result\":\"sent\",\"reason\":\"Command Queued\"}" 1
bm_check "a late answer to a command of an earlier run is recognised as ours" \
  bm_wait_log "$T/collectd.log" "correlationId \"$corr\", an earlier command of this plugin no longer followed: ignored" 5
bm_is "$(count "$T/collectd.log" "\"$corr\", which is not a command of this plugin")" 0 \
  "and not called somebody else's"
bm_stop_collectd
bm_done
