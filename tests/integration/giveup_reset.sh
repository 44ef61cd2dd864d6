#!/usr/bin/env bash
# A give-up while the broker still owes an acknowledgement: the plugin drops
# the MQTT client's state and reconnects afresh (client_reset). The give-up
# here comes in the middle of a read turn (a QoS 1 notification contradicts
# the fan's command, Retries 0), whose socket is held back (corked, reset on
# close) until the turn's journal record: the reset lets go of it first, so
# the notification's PUBACK and the DISCONNECT reach the broker, which then
# neither logs a lost connection nor delivers the notification again.
# (tests/mqttcut, given a pattern, swallows the pump's commands: the broker
# never sees them, never acknowledges them.)
. "$top_srcdir/tests/integration/plant.sh"

CLIENT=collectd-testhost-plant1
plant_token
bm_start_broker
bm_sub_start resource/commands 2
CMD_LOG=$SUB_LOG
CUT_PORT=$(bm_free_port)
"$top_builddir/tests/mqttcut" "$CUT_PORT" "$BROKER_PORT" $((BM_TEST_TIMEOUT)) \
  '"resourceId":101' >"$T/mqttcut.out" 2>&1 &
_bm_track $! mqttcut
bm_wait_for 5 bash -c "(echo >/dev/tcp/127.0.0.1/$CUT_PORT) 2>/dev/null"
bm_start_collectd "$(plant_conf 'QoS 1
    AckTimeout 60
    CommandTimeout 60
    Retries 0' '<Trigger "damp">
    Relay "plant1" "fan"
    Plugin "sensors"
    Type "humidity"
    OnFailure 1
  </Trigger>' | sed "s/Port $BROKER_PORT/Port $CUT_PORT/")"
bm_check "connected through the proxy" bm_wait_for 10 val_is current_connections 1

bm_notify failure sensors temperature "" "hot"
bm_check "the pump's command is swallowed on its way to the broker" \
  bm_wait_log "$T/mqttcut.out" 'swallowed PUBLISH 1$' 10
bm_notify failure sensors humidity "" "damp"
bm_check "the fan's command reaches the broker" bm_wait_log "$CMD_LOG" '"resourceId":102,' 10
corr=$(corr_of "$(grep '"resourceId":102,' "$CMD_LOG")")
bm_like "$corr" '^[0-9a-f]{16}-[0-9]+$' "the fan's command has a correlationId ($corr)"
bm_check "the broker acknowledged it" \
  bm_wait_log "$T/mosquitto.log" "Sending PUBACK to $CLIENT" 10
bm_is "$(count "$T/collectd.log" 'never acknowledged dropped')" 0 "no reset before the give-up"

# The fan reports off: the device could not switch; no retries are left.
bm_pub "$APP_TOPIC" "$(notif_json "$corr" 102 1 0)" 1
bm_check "the fan's command is given up" \
  bm_wait_log "$T/collectd.log" 'relay "fan".*gave up after 1 attempt' 10
bm_check "the pump's unacknowledged command is dropped with the client's state" \
  bm_wait_log "$T/collectd.log" '1 publication the broker never acknowledged dropped' 5
bm_check "the broker received the DISCONNECT" \
  bm_wait_log "$T/mosquitto.log" "Received DISCONNECT from $CLIENT" 5
bm_check "the plugin connects again" bm_wait_for 15 bash -c \
  "[[ \$(grep -c 'New client connected .* as $CLIENT' '$T/mosquitto.log') -ge 2 ]]"
bm_check "and is subscribed again" bm_wait_for 10 val_is current_connections 1
sleep 1
bm_is "$(count "$T/collectd.log" 'Notification: severity = FAILURE.*relay "fan".*gave up after 1 attempt')" 1 \
  "the give-up is reported once (the reset does not run the turn's events again)"
bm_is "$(count "$T/collectd.log" 'Notification: .*relay "fan" is off')" 1 \
  "and so is the fan's new state"
bm_is "$(count "$T/mosquitto.log" "Sending PUBLISH to $CLIENT \(d1")" 0 \
  "the notification was acknowledged: the broker delivers nothing again"
bm_is "$(count "$T/mosquitto.log" "(Socket error|closed its connection).*$CLIENT|$CLIENT.*(Socket error|closed its connection)")" 0 \
  "the broker saw no connection of the plugin lost"
bm_is "$(count "$T/collectd.log" 'connection to .* lost \(disconnected\)')" 0 \
  "the plugin's own DISCONNECT is not logged as a lost connection"
bm_stop_collectd
bm_is $? 0 "collectd shuts down cleanly"
bm_is "$(count "$T/collectd.log" 'connection to .* lost')" 0 \
  "nor is the one at shutdown"
bm_done
