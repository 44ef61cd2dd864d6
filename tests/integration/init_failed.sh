#!/usr/bin/env bash
# A plugin whose init failed (its journal cannot be made) stays out of the
# way: collectd unregisters only its read callback, so its notification
# callback still sees every notification, and a Trigger's matches must not
# pile up in the mailbox of a gateway that never runs (65,536 asks, after
# which the dispatching thread waited for room forever). 70,000 matching
# notifications through one unixsock connection are all answered, and
# collectd shuts down by itself.
. "$top_srcdir/tests/integration/plant.sh"

plant_token
bm_start_broker
: >"$T/notadir" # a file where the journal's directory should be
bm_start_collectd "$(plant_conf "JournalFile \"$T/notadir/plant1.journal\"")"
bm_check "the plugin's init fails: it says it does not start" \
  bm_wait_log "$T/collectd.log" 'the plugin does not start' 10
bm_is "$(count "$T/collectd.log" 'connected to')" 0 "no gateway connected"

n=70000
line="PUTNOTIF severity=failure time=$EPOCHSECONDS host=$BM_HOSTNAME plugin=sensors type=temperature message=\"too hot\""
answered=$(yes "$line" | head -n "$n" |
  timeout 60 socat -t 5 - "UNIX-CONNECT:$T/collectd.sock" 2>/dev/null | grep -c '^0 ')
bm_is "$answered" "$n" "every one of $n matching notifications is answered"
bm_is "$(bm_unixsock 'LISTVAL' | grep -c 'bimetri')" 0 "the plugin dispatches no value"
bm_stop_collectd
bm_is $? 1 "collectd shuts down by itself (status 1: \"one or more plugin init callbacks failed\")"
bm_done
