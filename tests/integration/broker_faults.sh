#!/usr/bin/env bash
# Broker faults: a broker that stalls (SIGSTOP) past the keepalive, and a
# broker that drops the connection after every PUBLISH (tests/mqttcut in
# front of it).  collectd's callbacks never wait on it, every command ends
# in a known outcome, and the plugin reconnects with backoff, not in a storm.
BM_TEST_TIMEOUT=${BM_TEST_TIMEOUT:-150}
. "$top_srcdir/tests/integration/plant.sh"

plant_token
bm_start_broker
bm_start_gwsim --secret-file "$T/secret" --delay 200

# 1. A stalled broker.
bm_start_collectd "$(plant_conf 'KeepAlive 5
    AckTimeout 4
    CommandTimeout 6
    Retries 3
    RetryBackoff 1')"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1
kill -STOP "$BROKER_PID"
bm_notify failure sensors temperature "" "hot while the broker stalls"
t0=$(date +%s%N)
bm_notify okay sensors humidity "" "another notification"
t1=$(date +%s%N)
(( (t1 - t0) / 1000000 < 500 )); bm_ok $? "notifications are taken at once while the broker stalls ($(( (t1 - t0) / 1000000 )) ms)"
bm_check "the stall is noticed past the keepalive" bm_wait_for 15 val_is current_connections 0
bm_check "the plugin says the connection was lost, and why" \
  grep -qE 'connection to 127.0.0.1:[0-9]+ lost \(nothing from the broker within KeepAlive \(5 s\)\)' "$T/collectd.log"
kill -CONT "$BROKER_PID"
bm_check "it reconnects once the broker is back" bm_wait_for 20 val_is current_connections 1
bm_check "the command made during the stall ends confirmed" wait_val bool-pump 1 30
bm_stop_collectd

# 1b. A broker that takes the TCP connection but never answers the CONNECT
# (stalled before collectd starts): libmosquitto gives up after KeepAlive.
kill -STOP "$BROKER_PID"
: >"$T/collectd.log"
bm_start_collectd "$(plant_conf 'KeepAlive 5')"
bm_check "a connect left unanswered is said to be one, not an unknown error" \
  bm_wait_log "$T/collectd.log" 'connection to 127.0.0.1:[0-9]+ lost \(not connected within KeepAlive \(5 s\): no CONNACK\)' 10
kill -CONT "$BROKER_PID"
bm_check "it connects once the broker answers" bm_wait_for 20 val_is current_connections 1
bm_stop_collectd

# 2. A broker that drops the connection after every PUBLISH.
CUT_PORT=$(bm_free_port)
"$top_builddir/tests/mqttcut" "$CUT_PORT" "$BROKER_PORT" $((BM_TEST_TIMEOUT)) >"$T/mqttcut.out" 2>&1 &
_bm_track $! mqttcut
bm_wait_for 5 bash -c "(echo >/dev/tcp/127.0.0.1/$CUT_PORT) 2>/dev/null"
: >"$T/collectd.log"
conn_before=$(grep -c "New client connected .* as collectd-testhost-plant1" "$T/mosquitto.log")
bm_start_collectd "$(plant_conf 'AckTimeout 4
    CommandTimeout 6
    Retries 2
    RetryBackoff 1' | sed "s/Port $BROKER_PORT/Port $CUT_PORT/")"
bm_check "connected through the cutting proxy" bm_wait_for 10 val_is current_connections 1
start=$EPOCHSECONDS
bm_notify okay sensors temperature "" "cool"
ended() { grep -qE 'relay "pump" is off|ended: no (notification|commandResponse)|gave up' "$T/collectd.log"; }
bm_check "the command ends in a known outcome (confirmed, timed out or given up)" bm_wait_for 40 ended
bm_check "the proxy did cut after the PUBLISH" grep -q 'cut after PUBLISH' "$T/mqttcut.out"
sleep 5
elapsed=$((EPOCHSECONDS - start))
attempts=$(( $(grep -c "New client connected .* as collectd-testhost-plant1" "$T/mosquitto.log") - conn_before ))
bm_diag "$attempts connections of the plugin in ${elapsed} s of cuts"
# Backoff 1, 2, 4, 8 ... s: about log2(elapsed) + 2 connections.
(( attempts <= 7 )); bm_ok $? "reconnects back off: $attempts connections in ${elapsed} s, no storm"
bm_check "collectd is still running" kill -0 "$COLLECTD_PID"
bm_done
