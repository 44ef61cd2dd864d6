#!/usr/bin/env bash
# Dropped answers: a dropped notification times out (WARNING) and is retried
# with a new correlationId; a gateway that never confirms is retried
# Retries times, then the plugin gives up with a FAILURE.
. "$top_srcdir/tests/integration/plant.sh"

plant_token
bm_start_broker
bm_sub_start resource/commands 2
CMD_LOG=$SUB_LOG
bm_start_gwsim --secret-file "$T/secret" --drop-notifications 1 --delay 100
bm_start_collectd "$(plant_conf 'AckTimeout 1
    CommandTimeout 2
    Retries 2
    RetryBackoff 0.5')"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1

bm_notify failure sensors temperature "" "too hot"
bm_check "the relay is confirmed on after a dropped notification" wait_val bool-pump 1 15
bm_is "$(count "$CMD_LOG" setExtDO)" 2 "two commands were published"
ids=$(corr_of "$(<"$CMD_LOG")" | sort -u | wc -l)
bm_is "$ids" 2 "the retry has a new correlationId"
bm_check "the timeout is a WARNING notification" \
  grep -qE 'Notification: severity = WARNING, .*type = relay_result, type_instance = pump, message = .*attempt 1\) ended: no notification within 2 s' "$T/collectd.log"
bm_check "operations-timeout is 1" wait_val operations-timeout 1 5
bm_check "the simulator saw the drop" grep -q '^drop notif' "$T/gwsim.log"

# A gateway that never confirms: 1 + Retries commands, then a FAILURE.
bm_stop_gwsim
bm_start_gwsim --secret-file "$T/secret" --no-notify --delay 100
bm_notify okay sensors temperature "" "cool"
bm_wait_log "$T/collectd.log" 'gave up after 3 attempts' 20
bm_check "giving up is a FAILURE notification" \
  grep -qE 'Notification: severity = FAILURE, .*type_instance = pump, message = relay "pump" not switched off: gave up after 3 attempts' "$T/collectd.log"
bm_is "$(count "$CMD_LOG" '"status":0\}\}$')" 3 "the off command was sent 1 + Retries times"
bm_check "operations-gave_up is 1" wait_val operations-gave_up 1 5
bm_is "$(val bool-pump)" 1 "the relay still reports its real state, on"
bm_is "$(val pending_operations-pump)" 0 "nothing is pending after giving up"
sleep 3
bm_is "$(count "$CMD_LOG" '"status":0\}\}$')" 3 "nothing more is sent after giving up"

# No response at all: the ack timeout.
bm_stop_gwsim
bm_start_gwsim --secret-file "$T/secret" --drop-responses 1 --no-notify
bm_notify failure sensors temperature "" "hot"
bm_notify okay sensors temperature "" "cool"
bm_check "a missing commandResponse times out after AckTimeout" bm_wait_log "$T/collectd.log" 'ended: no commandResponse within 1 s' 10
bm_done
