#!/usr/bin/env bash
# The broker goes away in the middle of commands: the plugin reports the
# connection down, reconnects with backoff, resubscribes, and every command
# ends in a known outcome; intents made while disconnected are sent later.
. "$top_srcdir/tests/integration/plant.sh"

plant_token
bm_start_broker
bm_start_gwsim --secret-file "$T/secret" --delay 2500
bm_start_collectd "$(plant_conf 'AckTimeout 8
    CommandTimeout 12
    Retries 2')"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1

# A command is acknowledged; its notification is due in 2.5 s. The broker
# restarts meanwhile (without persistence: sessions are lost).
bm_notify failure sensors temperature "" "too hot"
bm_wait_log "$T/gwsim.log" '^resp corr=' 10
bm_restart_broker
bm_check "the plugin noticed the lost connection" bm_wait_log "$T/collectd.log" 'connection to 127.0.0.1:[0-9]+ lost' 10
bm_check "current_connections went to 0" bm_wait_for 10 val_is current_connections 0
bm_check "it reconnected and resubscribed" bm_wait_for 15 val_is current_connections 1
bm_check "the new session is logged" grep -qE 'subscribed to "application/third-party/flexyWattApp/1" \(granted QoS 1, session new\)' "$T/collectd.log"
bm_check "the command in flight still ends confirmed" wait_val bool-pump 1 20

# Broker down while a notification asks for a change: the intent waits.
bm_stop_broker
bm_wait_for 10 val_is current_connections 0
bm_notify okay sensors temperature "" "cool"
sleep 2
bm_start_broker
bm_check "the plugin is connected and subscribed" bm_wait_for 15 val_is current_connections 1
bm_check "an intent recorded while disconnected is carried out after the reconnect" wait_val bool-pump 0 20

# The broker is killed right after a publish, before any answer.
bm_notify failure sensors temperature "" "hot again"
bm_wait_log "$T/gwsim.log" '^cmd corr=.* status=1' 10
bm_kill_broker
sleep 1
bm_start_broker
bm_check "a command cut off by a broker crash still ends confirmed" bm_wait_for 30 val_is bool-pump 1
n=$(count "$T/collectd.log" 'cannot connect to|connection to .* lost')
(( n < 20 )); bm_ok $? "reconnects back off ($n connection failures logged)"
bm_check "collectd is still running" kill -0 "$COLLECTD_PID"
bm_is "$(count "$T/collectd.log" 'closed the connection right after a QoS')" 0 \
  "a broker that restarts is not taken for one refusing QoS 2"
bm_done
