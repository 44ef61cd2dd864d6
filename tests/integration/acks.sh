#!/usr/bin/env bash
# At QoS 1 the plugin answers the gateway's messages at once, even though
# it corks its socket while it reads a burst (so that the burst's PUBACKs
# leave in one segment): the broker, allowed one message in flight to each
# client, sends the next only after the answer to the previous one. N
# messages in a row then take N round trips, milliseconds each; an answer
# left corked waits for the kernel's 200 ms timer, and N of them take N/5 s.
# QoS 2's answers (PUBREC, PUBCOMP) take the same path; Debian 12's
# mosquitto 2.0.11 stops delivering QoS 2 with an inflight quota (see
# bench/ingest.sh), so QoS 1 it is.
. "$top_srcdir/tests/integration/plant.sh"

N=40
LIMIT=3 # s for the N messages; 8 s when each answer waits 200 ms

# notification_lines: N notifications from another application (their
# own correlationIds), flipping the pump off and on, one per line.
notification_lines() {
  local i
  for ((i = 1; i <= N; i++)); do
    notif_json "by-hand-$i" 101 4 $((i % 2))
    echo
  done
}

plant_token
bm_start_broker "max_inflight_messages 1"
bm_start_collectd "$(plant_conf "QoS 1")"
bm_check "the plugin is connected and subscribed" \
  bm_wait_for 10 val_is current_connections 1
notification_lines >"$T/lines"
t0=$(_bm_now_us)
timeout 10 mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -t "$APP_TOPIC" \
  -l <"$T/lines"
bm_is "$?" 0 "$N notifications published at QoS 1"
bm_check "the plugin received all $N" \
  bm_wait_log "$T/collectd.log" 'received notification extDOStateChanged' 20 "$N"
took_ms=$((($(_bm_now_us) - t0) / 1000))
bm_ok "$( ((took_ms < LIMIT * 1000)); echo $?)" \
  "one at a time, each after the plugin's answer: ${took_ms} ms (limit ${LIMIT} s)"
bm_is "$(val bool-pump)" 0 "the last notification is applied"
bm_stop_collectd
bm_ok $? "collectd stops cleanly"
bm_done
