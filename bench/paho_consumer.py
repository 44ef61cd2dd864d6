"""bench/paho_consumer.py - the ingest benchmark's script peer: what a user
would write instead of the plugin, with paho-mqtt and json (Debian's
python3-paho-mqtt): subscribe, decode each extDOStateChanged notification,
keep each relay's state in a dict. Prints "ready" once subscribed, then,
after COUNT messages, the CLOCK_REALTIME (ns) of the last one.

    /usr/bin/python3 bench/paho_consumer.py PORT TOPIC QOS COUNT
"""
import json
import sys
import time

import paho.mqtt.client as mqtt

port, topic, qos, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
state = {}
seen = 0


def on_connect(client, userdata, flags, rc):
    client.subscribe(topic, qos)


def on_subscribe(client, userdata, mid, granted):
    print("ready", flush=True)


def on_message(client, userdata, msg):
    global seen
    m = json.loads(msg.payload)
    if m.get("messageType") == "notification" and \
            m.get("notificationType") == "extDOStateChanged":
        p = m["parameters"]
        state[(p["resourceId"], p["output"])] = p["status"]
    seen += 1
    if seen == count:
        print(time.time_ns(), flush=True)
        client.disconnect()


client = mqtt.Client()
client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.connect("127.0.0.1", int(port), 60)
last = (seen, time.monotonic())
while seen < count:
    client.loop(timeout=0.1)
    if seen != last[0]:
        last = (seen, time.monotonic())
    elif time.monotonic() - last[1] > 10:
        sys.exit("paho_consumer: %d of %d messages, none for 10 s" % (seen, count))
client.loop(timeout=0.1)
