#!/usr/bin/env bash
# Commands the gateway refuses: unauthorized (a token signed with another
# secret), not_send (a resource the user may not access), failed (an output
# the device does not have). Each ends the command with a FAILURE
# notification carrying the reason; nothing is retried, no state changes.
. "$top_srcdir/tests/integration/plant.sh"

plant_token
printf 'another-secret-entirely-0123456789' >"$T/other-secret"
bm_start_broker
bm_sub_start resource/commands 2
CMD_LOG=$SUB_LOG
# The simulator checks tokens against a secret the plugin's token was not
# signed with, and denies resource 102.
bm_start_gwsim --secret-file "$T/other-secret" --deny 102 --delay 100
bm_start_collectd "$(plant_conf 'AckTimeout 2
    CommandTimeout 3
    Retries 2' '<Trigger "fan-on">
    Relay "plant1" "fan"
    Plugin "sensors"
    Type "humidity"
    OnFailure 1
  </Trigger>')"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1

bm_notify failure sensors temperature "" "too hot"
bm_wait_log "$T/collectd.log" 'type = relay_result, type_instance = pump' 10
bm_check "unauthorized gives a FAILURE notification with the reason" \
  grep -qE 'Notification: severity = FAILURE, .*type = relay_result, type_instance = pump, message = command to switch relay "pump" on \(correlationId "[0-9a-f-]+", attempt 1\) ended: unauthorized: ' "$T/collectd.log"
bm_check "operations-unauthorized is 1" bm_wait_for 5 val_is operations-unauthorized 1
sleep 4 # past AckTimeout and CommandTimeout: nothing may be retried
bm_is "$(count "$CMD_LOG" setExtDO)" 1 "an unauthorized command is not retried"
bm_check "and does not time out later" wait_val operations-timeout 0 5
bm_is "$(val bool-pump 2>/dev/null || echo unknown)" unknown "the pump's state stays unknown"
bm_is "$(val pending_operations-pump)" 0 "nothing is pending"

# not_send, with the protocol's reason. A fresh simulator checks no token.
bm_stop_gwsim
bm_start_gwsim --deny 102 --delay 100
bm_notify failure sensors humidity "" "wet"
bm_wait_log "$T/collectd.log" 'type_instance = fan, message = command' 10
bm_check "not_send gives a FAILURE notification with the gateway's reason" \
  grep -qF 'ended: not_send: The user does not have access rights to the resource!' "$T/collectd.log"
bm_check "operations-not_send is 1" bm_wait_for 5 val_is operations-not_send 1

# failed: an output the simulated device does not have.
bm_stop_gwsim
bm_start_gwsim --outputs 2 --delay 100
bm_notify failure sensors temperature "" "hot again"
bm_check "an output the device lacks gives operations-failed" bm_wait_for 10 val_is operations-failed 1
bm_check "failed carries the reason" grep -qF 'ended: failed: Invalid output' "$T/collectd.log"

# The same intent again restarts a stopped relay: it is a new request.
bm_stop_gwsim
bm_start_gwsim --delay 100
bm_notify failure sensors temperature "" "still hot"
bm_check "a new request after a refusal switches the relay once the gateway agrees" wait_val bool-pump 1 10
bm_check "the token appears in no log, output or metric" no_secret_leaked
bm_done
