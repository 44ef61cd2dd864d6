#!/usr/bin/env bash
# A burst of the device's own state changes, faster than collectd takes
# them: 4,000 extDOStateChanged notifications without a correlationId,
# each flipping the pump or the fan, published back to back. The plugin
# reads them in batches and hands every state change to its dispatcher
# thread through a queue of 1,024 events. A slow notification plugin (a
# Python one sleeping 0.5 ms per notification of ours, as a mailer or a
# pager would take longer) makes the queue fill, so the gateway thread
# must wait for room: every change must still become a relay_on/relay_off
# notification and a bool value, in order, nothing dropped; none is logged
# at info level as received (the notification of the change says it).
. "$top_srcdir/tests/integration/plant.sh"
BM_STOCK_PLUGINS+=" python"
BM_TEST_TIMEOUT=${BM_TEST_TIMEOUT:-180}
N=4000

cat >"$T/slow_consumer.py" <<'EOF2'
import time

import collectd

seen = 0


def notify(n):
    global seen
    if n.plugin == "bimetri" and n.type in ("relay_on", "relay_off"):
        seen += 1
        time.sleep(0.0005)


def report():
    collectd.info("slow_consumer: %d relay notifications" % seen)


collectd.register_notification(notify)
collectd.register_shutdown(report)
EOF2
SLOW='<LoadPlugin python>
  Globals true
</LoadPlugin>
<Plugin python>
  ModulePath "'"$T"'"
  Import "slow_consumer"
</Plugin>'

plant_token
# The plugin's waiting leaves the messages with the broker: its queue must
# hold the burst (mosquitto keeps 1000 per client by default, then drops).
bm_start_broker "max_queued_messages 100000"
bm_start_collectd "$SLOW
$(plant_conf)"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1

# Message i flips relay i % 2 (pump 101/4, fan 102/1): on, off, on, ...;
# each relay gets N/2, so both end off.
awk -v n="$N" 'BEGIN {
  for (i = 0; i < n; i++) {
    k = int(i / 2)
    printf "{\"messageType\":\"notification\",\"appId\":\"flexyWattApp.1\",\"command\":\"setExtDO\",\"notificationType\":\"extDOStateChanged\",\"userName\":\"Flexywatt User\",\"userId\":12345,\"parameters\":{\"resourceId\":%d,\"brand\":\"Bimetri\",\"model\":\"BMM620\",\"networkId\":\"26:AA:E0:23:23:5E\",\"organizationId\":23456,\"output\":%d,\"status\":%d}}\n",
      i % 2 ? 102 : 101, i % 2 ? 1 : 4, k % 2 ? 0 : 1
  }
}' >"$T/burst"
changes() { count "$T/collectd.log" 'type = relay_o(n|ff), type_instance = (pump|fan),'; }
before=$(changes)
timeout 60 mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -t "$APP_TOPIC" -l <"$T/burst"
bm_ok $? "$N notifications published"
enough() { (($(changes) - before >= N)); }
bm_check "every change became a relay_on/relay_off notification" bm_wait_for 60 enough
bm_is "$(($(changes) - before))" "$N" "exactly $N, none twice"
bm_is "$(count "$T/collectd.log" 'type = relay_on, type_instance = pump,')" $((N / 4)) \
  "the pump went on $((N / 4)) times"
bm_is "$(count "$T/collectd.log" 'type = relay_off, type_instance = fan,')" $((N / 4)) \
  "the fan went off $((N / 4)) times"
# In order: the notifications of each relay alternate on, off, on, ...
bm_is "$(grep -oE 'type = relay_o(n|ff), type_instance = pump,' "$T/collectd.log" | uniq -c | awk '$1 != 1' | wc -l)" \
  0 "the pump's notifications alternate: no change lost or reordered"
bm_check "both relays end off" wait_val bool-pump 0 10
bm_check "the fan too" wait_val bool-fan 0 10
# The bool values: every change was dispatched (csv writes each one).
pump_values=$(cat "$T"/csv/testhost/bimetri-plant1/bool-pump-* 2>/dev/null | awk -F, '$1 != "epoch"' | wc -l)
ok_values=$((pump_values >= N / 2))
bm_ok $((!ok_values)) "every pump change reached the write path as a value ($pump_values values for $((N / 2)) changes)"
bm_is "$(count "$T/collectd.log" 'received notification extDOStateChanged correlationId ""')" 0 \
  "no info line per unsolicited notification"
bm_is "$(count "$T/collectd.log" 'relay events lost|dropped a message')" 0 "nothing dropped or lost"
bm_stop_collectd
bm_is $? 0 "collectd shuts down cleanly"
bm_like "$(grep 'slow_consumer:' "$T/collectd.log")" "slow_consumer: $N relay notifications" \
  "the slow notification plugin saw all $N"
bm_done
