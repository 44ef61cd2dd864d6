#!/usr/bin/env bash
# The whole command path: a threshold-style notification through collectd
# becomes a setExtDO command (QoS 2, every field), the simulator answers,
# and the confirmed state becomes metrics and notifications.
. "$top_srcdir/tests/integration/plant.sh"

plant_token
bm_start_broker
bm_sub_start resource/commands 2
CMD_LOG=$SUB_LOG
bm_sub_start "$APP_TOPIC" 2
APP_LOG=$SUB_LOG
bm_start_gwsim --secret-file "$T/secret" --delay 300
bm_start_collectd "$(plant_conf)"

bm_check "connected and subscribed: current_connections is 1" bm_wait_for 10 val_is current_connections 1
# The Gateway thread runs SCHED_BATCH (the man page says why), the
# dispatcher and collectd's own threads as they were.
policy_of() { # THREAD_NAME: the scheduling policies of collectd's threads of that name
  local task
  for task in /proc/"$COLLECTD_PID"/task/*; do
    [[ $(<"$task/comm") == "$1" ]] && chrt -p "${task##*/}" | sed -n 's/.*policy: //p'
  done
}
bm_is "$(policy_of 'bimetri#0')" SCHED_BATCH "the Gateway thread runs SCHED_BATCH"
bm_is "$(policy_of 'bimetri#d')" SCHED_OTHER "the dispatcher thread is an ordinary one"
bm_is "$(val bool-pump 2>/dev/null || echo unknown)" unknown \
  "no state is reported before the gateway said anything"

# The threshold plugin's start-up OKAY must not switch an unknown relay.
bm_notify okay sensors temperature "" "start-up okay"
sleep 1.5
bm_is "$(count "$CMD_LOG" setExtDO)" 0 "an OKAY for a relay of unknown state publishes nothing"

# FAILURE: the pump goes on.
bm_notify failure sensors temperature "" "too hot"
bm_wait_log "$CMD_LOG" setExtDO 10
line=$(grep setExtDO "$CMD_LOG" | head -1)
token=$(<"$T/token")
re='^2 resource/commands \{"messageType":"commandMessage","appId":"flexyWattApp\.1","brand":"Bimetri","jwtToken":"'
re+=$(printf '%s' "$token" | sed 's/[.]/\\./g')
re+='","userId":12345,"organizationId":23456,"command":"setExtDO","correlationId":"([0-9a-f]{16}-[0-9]+)","parameters":\{"resourceId":101,"output":4,"status":1\}\}$'
bm_like "$line" "$re" "the command is published at QoS 2 with the exact envelope"
corr=$(corr_of "$line")

bm_check "bool-pump is 1 after the confirmation" wait_val bool-pump 1 10
bm_wait_log "$APP_LOG" '"messageType":"notification"' 5
bm_like "$(grep commandResponse "$APP_LOG" | head -1)" "\"correlationId\":\"$corr\",\"result\":\"sent\"" \
  "the gateway answered sent for that correlationId"
bm_like "$(grep -E "publish.*correlationId \"$corr\"" "$T/collectd.log")" "origin \"trigger overheat: FAILURE from testhost/sensors/temperature\"" \
  "the publish log line has the correlationId and the origin"
bm_check "the receive log lines name the correlationId" \
  grep -qE "received notification extDOStateChanged correlationId \"$corr\"" "$T/collectd.log"
bm_check "the plugin dispatched a relay_on notification" \
  grep -qE "Notification: severity = OKAY, host = testhost, plugin = bimetri, plugin_instance = plant1, type = relay_on, type_instance = pump" "$T/collectd.log"
bm_wait_for 5 val_is operations-confirmed 1
bm_check "operations-published is 1" wait_val operations-published 1 5
bm_check "operations-sent is 1" wait_val operations-sent 1 5
bm_check "operations-confirmed is 1" wait_val operations-confirmed 1 5
bm_is "$(val pending_operations-pump)" 0 "nothing is pending"
bm_wait_for 5 val pending_operations-fan >/dev/null
bm_is "$(val bool-fan 2>/dev/null || echo unknown)" unknown "the fan's state is still unknown"
bm_check "response_time-confirm was reported" val response_time-confirm
bm_check "the csv plugin stored bool-pump" \
  bash -c "ls '$T'/csv/testhost/bimetri-plant1/bool-pump-* >/dev/null"

# The same FAILURE again: level-based, nothing to do.
bm_notify failure sensors temperature "" "still too hot"
sleep 1.5
bm_is "$(count "$CMD_LOG" setExtDO)" 1 "a repeated FAILURE publishes nothing"

# OKAY: the pump goes off.
bm_notify okay sensors temperature "" "cool again"
bm_check "bool-pump is 0 after the OKAY" wait_val bool-pump 0 10
bm_is "$(count "$CMD_LOG" '"status":0\}\}$')" 1 "one command with status 0 was published"
bm_check "the plugin dispatched a relay_off notification" \
  grep -qE "type = relay_off, type_instance = pump" "$T/collectd.log"

# Other plugins' notifications that match no Trigger, and the plugin's own.
bm_notify failure sensors humidity "" "wet"
bm_notify failure bimetri-plant1 relay_result pump "own"
sleep 1
bm_is "$(count "$CMD_LOG" setExtDO)" 2 "non-matching notifications publish nothing"

bm_check "the token appears in no log, output or metric" no_secret_leaked
bm_stop_collectd
bm_is $? 0 "collectd shuts down cleanly with the plugin loaded"
bm_done
