#!/usr/bin/env bash
# Restarts with the journal: the confirmed state is back before the first
# message from the gateway; a command in flight at shutdown is published
# again with its own correlationId and confirmed; one that expired during
# the downtime times out as it would have live and is retried with a new
# correlationId; an old confirmation redelivered after a restart is a
# duplicate and never rolls a relay back; a change nobody asked for that
# contradicts our last confirmed command is reported as drift and
# commanded back.
. "$top_srcdir/tests/integration/plant.sh"

# Long timeouts: a command in flight must survive the downtime.
LONG='AckTimeout 20
    CommandTimeout 30
    Retries 2
    RetryBackoff 0.2'
# Short ones: a command in flight expires during the downtime.
SHORT='AckTimeout 2
    CommandTimeout 3
    Retries 2
    RetryBackoff 0.2'
JOURNAL=$T/bimetri-plant1.journal

# start_collectd OPTIONS: starts collectd on the plant with these Gateway
# options (the journal is the default one, so it is kept across starts).
start_collectd() { bm_start_collectd "$(plant_conf "$1")"; }

plant_token
bm_start_broker
bm_sub_start resource/commands 2
CMD_LOG=$SUB_LOG
bm_start_gwsim --secret-file "$T/secret" --delay 100
start_collectd "$LONG"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1
bm_check "the journal is at its default path under BaseDir" test -s "$JOURNAL"

# ---- 1. the confirmed state is back before the gateway says anything -----
bm_notify failure sensors temperature "" "too hot"
bm_check "the pump is confirmed on" wait_val bool-pump 1 10
bm_stop_collectd
bm_ok $? "collectd stops cleanly"
bm_stop_gwsim
published=$(count "$CMD_LOG" setExtDO)
mark=$(log_mark)
start_collectd "$LONG"
if bm_wait_for 1 val_is bool-pump 1 >/dev/null; then st=0; else st=1; fi
got_rx=$(log_from "$mark" | grep -c 'received ') || true
bm_ok "$st" "bool-pump is 1 within 1 s of the socket answering, restored from the journal"
bm_is "$got_rx" 0 "no message from the gateway was received before that"
bm_like "$(log_from "$mark" | grep 'records replayed')" '1 relay states restored, 0 commands resumed' \
  "the replay restored one relay state and resumed nothing"
bm_is "$(val bool-fan 2>/dev/null || echo unknown)" unknown "the fan, never confirmed, stays unknown"
bm_check "the plugin is connected again" bm_wait_for 10 val_is current_connections 1
sleep 1.5
bm_is "$(count "$CMD_LOG" setExtDO)" "$published" "nothing was published after the restart"
bm_is "$(log_from "$mark" | grep -c 'published setExtDO')" 0 "and the log shows no publish"
bm_is "$(val bool-pump)" 1 "the pump is still on with no gateway at all"

# ---- 2. a command in flight at shutdown is resumed with its own id -------
bm_start_gwsim --secret-file "$T/secret" --no-notify --delay 100
n_off=$(count "$CMD_LOG" '"status":0}}$')
bm_notify okay sensors temperature "" "cool"
bm_check "the off command was answered sent" bm_wait_log "$T/gwsim.log" '^resp corr=.* result=sent' 10
# The subscriber's copy may come after the gateway's answer.
bm_check "the off command is in the subscriber's log" \
  bm_wait_log "$CMD_LOG" '"status":0}}$' 5 $((n_off + 1))
line=$(grep '"status":0}}$' "$CMD_LOG" | tail -1)
x=$(corr_of "$line")
bm_like "$x" '^[0-9a-f]{16}-[0-9]+$' "the off command has a correlationId ($x)"
bm_check "the plugin journaled its response" \
  bm_wait_log "$T/collectd.log" "received commandResponse correlationId \"$x\" result sent" 5
bm_check "it is pending: the gateway never confirms" wait_val pending_operations-pump 1 3
bm_stop_collectd
bm_stop_gwsim
bm_start_gwsim --secret-file "$T/secret" --delay 100
mark=$(log_mark)
start_collectd "$LONG"
bm_like "$(log_from "$mark" | grep 'records replayed')" '1 relay states restored, 1 commands resumed' \
  "the replay resumed the command in flight"
bm_check "it is published again with the same correlationId" \
  bm_wait_log "$CMD_LOG" "\"correlationId\":\"$x\"" 10 2
bm_check "and the log says republished" \
  grep -qE "republished setExtDO relay \"pump\" .*status 0, correlationId \"$x\", attempt 1, origin \"resumed after restart: trigger overheat: OKAY" "$T/collectd.log"
bm_check "the resumed command is confirmed: the pump is off" wait_val bool-pump 0 10
bm_check "the confirmation carried that correlationId" \
  grep -qE "type = relay_off, type_instance = pump, message = relay \"pump\" is off \(was on\), correlationId \"$x\"" "$T/collectd.log"
bm_is "$(count "$CMD_LOG" setExtDO)" $((published + 2)) "no other command was published"
bm_check "pending_operations-pump is back to 0" wait_val pending_operations-pump 0 5

# ---- 3. a command that expired during the downtime times out, is retried --
bm_stop_collectd
mark=$(log_mark)
start_collectd "$SHORT"
bm_check "connected with short timeouts" bm_wait_for 10 val_is current_connections 1
bm_stop_gwsim
bm_start_gwsim --secret-file "$T/secret" --no-notify --delay 100
n_on=$(count "$CMD_LOG" '"status":1}}$')
bm_notify failure sensors temperature "" "too hot again"
bm_check "the on command was published" bm_wait_log "$CMD_LOG" '"status":1}}$' 10 $((n_on + 1))
y=$(corr_of "$(grep '"status":1}}$' "$CMD_LOG" | tail -1)")
bm_check "the plugin journaled its response" \
  bm_wait_log "$T/collectd.log" "received commandResponse correlationId \"$y\" result sent" 10
bm_stop_collectd
bm_stop_gwsim
sleep 4 # longer than CommandTimeout 3
bm_start_gwsim --secret-file "$T/secret" --delay 100
mark=$(log_mark)
start_collectd "$SHORT"
bm_like "$(log_from "$mark" | grep 'records replayed')" '1 commands resumed' \
  "the expired command ($y) was resumed from the journal"
bm_check "it times out as live: a WARNING naming its correlationId" \
  bm_wait_log "$T/collectd.log" "Notification: severity = WARNING, .*type = relay_result, type_instance = pump, message = command to switch relay \"pump\" on \(correlationId \"$y\", attempt 1\) ended: no notification within 3 s" 10
bm_check "the pump is confirmed on by the retry" wait_val bool-pump 1 10
bm_is "$(count "$CMD_LOG" "\"correlationId\":\"$y\"")" 1 "the expired command was not published again"
z=$(corr_of "$(grep '"status":1}}$' "$CMD_LOG" | tail -1)")
bm_isnt "$z" "$y" "the retry has a new correlationId ($z)"
bm_check "the retry is attempt 2 of the resumed intent" \
  grep -qE "published setExtDO relay \"pump\" .*status 1, correlationId \"$z\", attempt 2, origin \"resumed after restart:" "$T/collectd.log"
bm_check "operations-timeout is 1 in this run" wait_val operations-timeout 1 5
(( ${z##*-} > ${y##*-} )); bm_ok $? "the sequence went on across the restarts (${y##*-} then ${z##*-})"

# ---- 4. old confirmations redelivered after a restart are duplicates -----
# A state from another application's command (a foreign correlationId),
# then a change by hand, for the fan.
bm_pub "$APP_TOPIC" "$(notif_json field-tool-7 102 1 1)" 1
bm_check "a foreign confirmation applies: the fan is on" wait_val bool-fan 1 5
bm_pub "$APP_TOPIC" "$(notif_json '' 102 1 0)" 1
bm_check "a change by hand applies: the fan is off" wait_val bool-fan 0 5
bm_stop_collectd
mark=$(log_mark)
start_collectd "$LONG"
bm_check "connected again" bm_wait_for 10 val_is current_connections 1
bm_is "$(val bool-pump)" 1 "the pump is restored on"
bm_is "$(val bool-fan)" 0 "the fan is restored off"
bm_pub "$APP_TOPIC" "$(notif_json "$x" 101 4 0)" 1
bm_check "the redelivered confirmation of the older off command is a duplicate" \
  bm_wait_log "$T/collectd.log" "correlationId \"$x\" already applied: duplicate ignored" 5
bm_check "operations-duplicate counts it" wait_val operations-duplicate 1 5
bm_is "$(val bool-pump)" 1 "no rollback: the pump is still on"
bm_pub "$APP_TOPIC" "$(notif_json field-tool-7 102 1 1)" 1
bm_check "a foreign confirmation already applied before the restart is a duplicate too" \
  bm_wait_log "$T/collectd.log" "correlationId \"field-tool-7\" already applied: duplicate ignored" 5
bm_check "operations-duplicate is 2" wait_val operations-duplicate 2 5
bm_is "$(val bool-fan)" 0 "the fan is still off"
bm_is "$(log_from "$mark" | grep -c 'type = relay_o[nf]f*, ')" 0 "no relay_on/relay_off since the restart"

# ---- 5. drift ----------------------------------------------------------
# The Trigger still wants the pump on (a new FAILURE: confirmed already, so
# nothing is sent); then the device reports it off, nobody of ours asking.
n_before=$(count "$CMD_LOG" setExtDO)
bm_notify failure sensors temperature "" "still hot"
sleep 1
bm_is "$(count "$CMD_LOG" setExtDO)" "$n_before" "a FAILURE for a relay already on sends nothing"
n_on=$(count "$CMD_LOG" '"status":1}}$')
bm_pub "$APP_TOPIC" "$(notif_json '' 101 4 0)" 1
bm_check "a WARNING relay_drift notification" \
  bm_wait_log "$T/collectd.log" 'Notification: severity = WARNING, host = testhost, plugin = bimetri, plugin_instance = plant1, type = relay_drift, type_instance = pump, message = relay "pump" is off, but our last confirmed command had set it on' 5
bm_check "operations-drift is 1" wait_val operations-drift 1 5
bm_check "the desired state wins: a command switches the pump back on" \
  bm_wait_log "$CMD_LOG" '"status":1}}$' 10 $((n_on + 1))
bm_check "and it is confirmed on" wait_val bool-pump 1 10
# A second change by hand on top of a change by hand is no drift: the
# state it contradicts was not set by a command of ours.
bm_pub "$APP_TOPIC" "$(notif_json '' 102 1 1)" 1
bm_check "the fan follows a change by hand" wait_val bool-fan 1 5
sleep 1.2
bm_is "$(val operations-drift)" 1 "a change contradicting a change by hand is no drift"
bm_is "$(grep -c 'type = relay_drift' "$T/collectd.log")" 1 "one relay_drift notification in all"

bm_check "the token appears in no log, output, metric or journal" no_secret_leaked
bm_stop_collectd
bm_is $? 0 "collectd shuts down cleanly"
bm_done
