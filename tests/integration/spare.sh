#!/usr/bin/env bash
# A bad field the plugin does not act on (a userName too long, a userId of
# the wrong type, a reason that is no string) costs only itself: the
# message is taken without it, the relay's state or the command's result is
# not lost, a warning names the field, and nothing counts as malformed
# (but what is dropped for another reason: another appId).
. "$top_srcdir/tests/integration/plant.sh"

plant_token
bm_start_broker
bm_sub_start resource/commands 2
CMD_LOG=$SUB_LOG
bm_start_collectd "$(plant_conf 'AckTimeout 30
    CommandTimeout 30
    Retries 0')"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1

long=$(printf 'u%.0s' {1..300})
fan() { # fan STATUS USER_FIELDS: an unsolicited change of the fan
  printf '{"messageType":"notification","appId":"flexyWattApp.1","notificationType":"extDOStateChanged",%s"parameters":{"resourceId":102,"brand":"Bimetri","output":1,"status":%s}}' "$2" "$1"
}
bm_pub "$APP_TOPIC" "$(fan 1 "\"userName\":\"$long\",")" 1
bm_check "a notification with a 300-byte userName switches the fan on" wait_val bool-fan 1 10
bm_check "a warning names the field" bm_wait_log "$T/collectd.log" \
  'took a notification despite its field "userName": longer than 255 bytes$' 5
bm_check "its relay_on notification went out" \
  bm_wait_log "$T/collectd.log" 'relay "fan" is on \(was unknown\), unsolicited' 5

bm_pub "$APP_TOPIC" "$(fan 0 '"userName":"Field Technician","userId":null,')" 1
bm_check "one with userId null switches it off" wait_val bool-fan 0 10

# A command's answer whose reason is a number: its result still counts.
bm_notify failure sensors temperature "" "hot"
bm_check "the pump's command is published" bm_wait_log "$CMD_LOG" '"resourceId":101,' 10
corr=$(corr_of "$(grep '"resourceId":101,' "$CMD_LOG")")
bm_pub "$APP_TOPIC" "{\"messageType\":\"commandResponse\",\"correlationId\":\"$corr\",\"result\":\"not_send\",\"reason\":404}" 1
bm_check "the commandResponse is taken: the command ends not_send" \
  wait_val operations-not_send 1 10
bm_check "and is logged with its correlationId" bm_wait_log "$T/collectd.log" \
  "received commandResponse correlationId \"$corr\" result not_send\$" 5
bm_check "nothing counted as malformed" wait_val operations-malformed 0 5
bm_is "$(count "$T/collectd.log" 'dropped a message')" 0 "no message dropped"

# Another appId's notification with a bad spare field is dropped for its
# appId, and said so at once: the notes above have a rate limit of their own.
bm_pub "$APP_TOPIC" '{"messageType":"notification","appId":"otherApp.1","notificationType":"extDOStateChanged","userId":"x","parameters":{"resourceId":102,"output":1,"status":1}}' 1
bm_check "another appId's notification is malformed" wait_val operations-malformed 1 10
bm_check "and dropped for its appId, not for its userId" bm_wait_log "$T/collectd.log" \
  'dropped a message on "application/third-party/flexyWattApp/1": notification for appId "otherApp.1", not ours$' 5
bm_is "$(val bool-fan)" 0 "the fan stays off"
bm_stop_collectd
bm_is $? 0 "collectd shuts down cleanly"
bm_done
