#!/usr/bin/env bash
# MQTT 5 with a session expiry: the persistent session outlives a broker
# restart (with broker persistence), commands round-trip as with 3.1.1, and
# a command cut off by the restart still ends confirmed. Subscribed at QoS 2
# (SubscribeQoS; 1 by default), the answers come at QoS 2 as sent.
. "$top_srcdir/tests/integration/plant.sh"

plant_token
bm_start_broker "persistence true" "autosave_interval 1"
bm_start_gwsim --secret-file "$T/secret" --qos 2 --delay 1500
bm_start_collectd "$(plant_conf 'ProtocolVersion 5
    SessionExpiry 600
    SubscribeQoS 2')"
bm_check "connected over MQTT 5" bm_wait_for 10 val_is current_connections 1
bm_check "the broker sees an MQTT 5 client (p5)" \
  grep -qE "New client connected .* as collectd-testhost-plant1 \(p5, c0" "$T/mosquitto.log"

bm_notify failure sensors temperature "" "too hot"
bm_check "a command round-trips over MQTT 5" wait_val bool-pump 1 10
bm_check "its answers came at QoS 2 (PUBREL from the broker)" \
  grep -qE "Sending PUBREL to collectd-testhost-plant1" "$T/mosquitto.log"

# A command in flight while the broker restarts (with persistence).
bm_notify okay sensors temperature "" "cool"
bm_wait_log "$T/gwsim.log" '^resp corr=.*' 10 2
bm_restart_broker
bm_check "reconnected after the broker restart" bm_wait_for 15 val_is current_connections 1
bm_check "the broker kept the session (session expiry > 0)" \
  bm_wait_log "$T/collectd.log" 'subscribed to .* \(granted QoS 2, session resumed\)' 5
bm_check "the command in flight still ends confirmed" wait_val bool-pump 0 20
bm_done
