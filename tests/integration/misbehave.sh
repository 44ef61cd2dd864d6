#!/usr/bin/env bash
# A gateway that misbehaves: duplicated answers, garbage, answers out of
# order, state changes nobody asked for, foreign and forged messages.
# Duplicates and garbage are counted and never change state; unsolicited
# changes are the device's real state and always apply.
. "$top_srcdir/tests/integration/plant.sh"

plant_token
bm_start_broker
bm_sub_start resource/commands 2
CMD_LOG=$SUB_LOG
bm_start_gwsim --secret-file "$T/secret" --duplicate --garbage --reorder --delay 100
bm_start_collectd "$(plant_conf 'AckTimeout 3
    CommandTimeout 3')"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1

bm_notify failure sensors temperature "" "too hot"
bm_check "the relay is confirmed on through duplicates, garbage and reordering" wait_val bool-pump 1 10
bm_check "the duplicated response and notification count 2 duplicates" wait_val operations-duplicate 2 5
bm_check "the garbage and the unknown messageType count 2 malformed" wait_val operations-malformed 2 5
bm_check "one confirmation" wait_val operations-confirmed 1 5
bm_check "one sent (the late response after the notification is no duplicate)" wait_val operations-sent 1 5
bm_is "$(count "$CMD_LOG" setExtDO)" 1 "one command only"
bm_check "malformed messages are logged" grep -q 'dropped a message on' "$T/collectd.log"
sleep 4
bm_check "nothing timed out" wait_val operations-timeout 0 5

# Forged or foreign messages on our topic: another appId, a field of the
# wrong type, an oversized payload. Counted, logged (rate-limited), ignored.
bm_pub "$APP_TOPIC" '{"messageType":"notification","appId":"otherApp.1","correlationId":"x","command":"setExtDO","notificationType":"extDOStateChanged","parameters":{"resourceId":101,"output":4,"status":0}}' 1
bm_pub "$APP_TOPIC" '{"messageType":"notification","appId":"flexyWattApp.1","notificationType":"extDOStateChanged","parameters":{"resourceId":101,"output":4,"status":"0"}}' 1
head -c 70000 /dev/zero | tr '\0' ' ' >"$T/big"
mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -t "$APP_TOPIC" -q 1 -f "$T/big"
bm_check "a foreign appId, a string status and an oversized payload count as malformed" bm_wait_for 5 val_is operations-malformed 5
bm_is "$(val bool-pump)" 1 "none of them changed the relay"

# Unsolicited: someone switched the relay at the device.
bm_pub "$APP_TOPIC" '{"messageType":"notification","appId":"flexyWattApp.1","command":"setExtDO","notificationType":"extDOStateChanged","userName":"Field Technician","userId":1,"parameters":{"resourceId":102,"output":1,"status":1}}' 1
bm_check "an unsolicited change (no correlationId) applies" wait_val bool-fan 1 5
bm_check "and is reported as unsolicited" grep -qE 'relay "fan" is on \(was unknown\), unsolicited' "$T/collectd.log"
bm_check "operations-unsolicited is 1" wait_val operations-unsolicited 1 5

# A notification for no configured relay changes nothing.
bm_pub "$APP_TOPIC" '{"messageType":"notification","appId":"flexyWattApp.1","notificationType":"extDOStateChanged","parameters":{"resourceId":999,"output":1,"status":1}}' 1
bm_check "a notification for an unknown relay counts as unknown" wait_val operations-unknown 1 5
bm_is "$(val bool-pump)" 1 "and changes no relay"

# Another kind of notification (no relay state) is ignored, counted as
# unknown (its warning is rate-limited with the ones above), and not
# logged with a state it did not carry.
bm_pub "$APP_TOPIC" '{"messageType":"notification","appId":"flexyWattApp.1","correlationId":"dev-7","notificationType":"deviceOnline","parameters":{"resourceId":101}}' 1
bm_check "a notification of another type counts as unknown" wait_val operations-unknown 2 5
bm_is "$(count "$T/collectd.log" 'received notification deviceOnline')" 0 \
  "and not as if it had a state (resourceId 0 output 0 status 0)"
bm_is "$(val bool-pump)" 1 "it changes no relay"

# The simulator's own unsolicited changes, flipping the pump: the desired
# state (on, from the Trigger) wins again each time (drift is corrected).
bm_stop_gwsim
bm_start_gwsim --secret-file "$T/secret" --app-id flexyWattApp.1 --unsolicited 1500 \
  --unsolicited-relay 101:4 --state 101:4=1 --delay 100
bm_wait_for 10 grep -q '^notif corr=- res=101 out=4 status=0' "$T/gwsim.log"
bm_check "a drift away from the desired state is commanded back" bm_wait_for 10 bash -c "grep -q 'status=1' <(grep '^cmd ' '$T/gwsim.log')"
bm_check "and the relay is on again" wait_val bool-pump 1 10
bm_check "the token appears in no log, output or metric" no_secret_leaked
bm_done
