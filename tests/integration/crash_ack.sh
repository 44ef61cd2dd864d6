#!/usr/bin/env bash
# A crash between a QoS 1 notification's arrival and its journal record (QoS
# 1: the subscription's default, SubscribeQoS):
# libmosquitto has already acknowledged it (PUBACK), but the plugin holds
# the acknowledgement back until the record is written, and a crash resets
# the connection instead of sending it. So the broker delivers the
# notification again to the restarted plugin, and the relay's state is the
# device's, not the journal's older one. (tests/faultfs.c, preloaded into
# collectd, stalls the journal's writes 150 ms while $T/stall exists,
# creating $T/in-write first: the test kills collectd inside that write.)
# Also for a notification the broker held for the plugin's session and
# sends before it answers the subscription (SUBACK).
. "$top_srcdir/tests/integration/plant.sh"

shim=$top_builddir/tests/.libs/faultfs.so
[[ -f $shim ]] || bm_bail "$shim is not built (make check builds it)"
export BM_COLLECTD_PRELOAD=$shim BM_FAULT_MATCH=$T/plant1.journal \
  BM_FAULT_WHEN=$T/stall BM_FAULT_WRITE_STALL_MS=150 BM_FAULT_MARK=$T/in-write

# kill_in_write: kills collectd once it is inside a stalled journal write;
# in_write is yes, or no when it never got there (within 5 s). The kill must
# land within the stall (150 ms) and TCP_CORK's 200 ms: polled every 5 ms
# with no fork but sleep's, not by bm_wait_for (100 ms).
kill_in_write() {
  local i
  for ((i = 0; i < 1000; i++)); do
    [[ -e $T/in-write ]] && break
    sleep 0.005
  done
  in_write=no
  [[ -e $T/in-write ]] && in_write=yes
  bm_kill_collectd
}

plant_token
bm_start_broker
bm_start_gwsim --secret-file "$T/secret" --delay 0
bm_start_collectd "$(plant_conf "JournalFile \"$T/plant1.journal\"")"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1
bm_check "at QoS 1 by default" grep -qE 'subscribed to ".*" \(granted QoS 1, session new\)' "$T/collectd.log"
bm_pub "$APP_TOPIC" "$(notif_json "" 102 1 1)" 1 # by hand, at QoS 1
bm_check "the fan is on, journaled" wait_val bool-fan 1 10

# The fan goes off; the plugin dies while writing that to its journal.
touch "$T/stall"
bm_pub "$APP_TOPIC" "$(notif_json "" 102 1 0)" 1
kill_in_write
bm_is "$in_write" yes "the plugin was inside the notification's journal write"
rm -f "$T/stall"
bm_is "$(count "$T/collectd.log" 'relay "fan" is off')" 0 \
  "the crash came before the change was dispatched"

_bm_launch_collectd || bm_bail "collectd did not restart (see $T/collectd.log)"
bm_check "after the restart the plugin is connected again" bm_wait_for 10 val_is current_connections 1
bm_check "the broker delivered the notification again: the fan is off" wait_val bool-fan 0 10
bm_check "its relay_off notification came with it" \
  bm_wait_log "$T/collectd.log" 'relay "fan" is off \(was on\), unsolicited' 5
bm_stop_collectd

# The same before the subscription is answered: the fan goes on while
# collectd is down, so the broker holds the notification for the
# plugin's session and sends it right after the CONNACK of the next
# connection, before the SUBACK. The broker is paused (SIGSTOP) while
# collectd starts, so that the stall window opens after the journal's
# start-up compaction and before the connection is answered.
bm_pub "$APP_TOPIC" "$(notif_json "" 102 1 1)" 1
kill -STOP "$BROKER_PID"
rm -f "$T/in-write"
mark=$(($(_bm_lines "$T/collectd.log") + 1))
_bm_launch_collectd || { kill -CONT "$BROKER_PID"; bm_bail "collectd did not start again (see $T/collectd.log)"; }
bm_check "the journal was replayed before the broker answered" \
  bm_wait_log "$T/collectd.log" 'records replayed' 10
sleep 0.5 # the connection's CONNECT is sent, unanswered
touch "$T/stall"
kill -CONT "$BROKER_PID"
kill_in_write
bm_is "$in_write" yes "the plugin was inside the queued notification's journal write"
rm -f "$T/stall"
bm_is "$(tail -n "+$mark" "$T/collectd.log" | grep -c 'relay "fan" is on')" 0 \
  "the crash came before the change was dispatched"

_bm_launch_collectd || bm_bail "collectd did not restart (see $T/collectd.log)"
bm_check "connected once more" bm_wait_for 10 val_is current_connections 1
bm_check "the broker delivered the notification again: the fan is on" wait_val bool-fan 1 10
bm_stop_collectd
bm_done
