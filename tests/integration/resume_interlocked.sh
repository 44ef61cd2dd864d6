#!/usr/bin/env bash
# A command in flight at shutdown whose relay became interlocked meanwhile
# (an Interlock added to the configuration, its partner on): at the
# restart it is not sent again but ends refused, with its correlationId;
# the journal ends it as well (a timeout record), so the next restart
# neither resumes it nor refuses it a second time.
. "$top_srcdir/tests/integration/plant.sh"

LONG='AckTimeout 20
    CommandTimeout 60'
INTERLOCK='Interlock "plant1" "pump" "fan"'
CTL=$top_builddir/bimetri-ctl


plant_token
bm_start_broker
bm_sub_start resource/commands 2
CMD_LOG=$SUB_LOG
# The gateway answers "sent" and never confirms: the command stays in flight.
bm_start_gwsim --secret-file "$T/secret" --no-notify --delay 100
bm_start_collectd "$(plant_conf "$LONG")"
bm_check "connected" bm_wait_for 10 val_is current_connections 1

# The fan goes on (by hand: a notification nobody here asked for).
bm_pub "$APP_TOPIC" "$(notif_json "" 102 1 1)" 1
bm_check "the fan is confirmed on" wait_val bool-fan 1 10

# The pump's "on" goes out and is queued, never confirmed.
bm_notify failure sensors temperature "" "too hot"
bm_check "the pump's on command was published" bm_wait_log "$CMD_LOG" '"status":1}}$' 10
x=$(corr_of "$(grep '"status":1}}$' "$CMD_LOG" | tail -1)")
bm_like "$x" '^[0-9a-f]{16}-[0-9]+$' "it has a correlationId ($x)"
bm_check "its response is journaled" \
  bm_wait_log "$T/collectd.log" "received commandResponse correlationId \"$x\" result sent" 10
bm_stop_collectd
bm_ok $? "collectd stops cleanly with the command in flight"
published=$(bm_count_log "$CMD_LOG" setExtDO)

# Restart with the pump and the fan interlocked.
mark=$(log_mark)
bm_start_collectd "$(plant_conf "$LONG" "$INTERLOCK")"
bm_like "$(log_from "$mark" | grep 'records replayed')" '1 relay states restored, 1 commands resumed' \
  "the replay resumed the pump's command"
bm_check "it is refused at the connection, naming its correlationId and the fan" \
  bm_wait_log "$T/collectd.log" "command to switch relay \"pump\" on \\(correlationId \"$x\", attempt 1\\) ended: refused: not sent again: interlocked with relay \"fan\", which is on" 10
bm_check "pending_operations-pump is 0" wait_val pending_operations-pump 0 10
sleep 1
bm_is "$(bm_count_log "$CMD_LOG" setExtDO)" "$published" "nothing was published again"
bm_stop_collectd
bm_ok $? "collectd stops cleanly"

# The journal ends the command.
RC=0
timeout 60 "$CTL" -C "$T/collectd.conf" status --history >"$T/history.out" 2>"$T/history.err" || RC=$?
bm_is "$RC" 0 "bimetri-ctl status --history reads the journal ($(head -c 200 "$T/history.err"))"
bm_like "$(grep -E '^[0-9]{4}-' "$T/history.out" | grep -F "\"$x\"" | tail -1)" \
  "^[^ ]+ timeout +relay \"pump\" correlationId \"$x\"\$" \
  "the journal's last record of $x is its timeout"
bm_like "$(<"$T/history.out")" 'pending commands: none' "the journal has no command pending"

# The next start resumes nothing and refuses nothing again.
mark=$(log_mark)
bm_start_collectd "$(plant_conf "$LONG" "$INTERLOCK")"
bm_like "$(log_from "$mark" | grep 'records replayed')" '1 relay states restored, 0 commands resumed' \
  "the next replay resumes nothing"
bm_check "connected again" bm_wait_for 10 val_is current_connections 1
sleep 1
bm_is "$(log_from "$mark" | grep -c 'not sent again')" 0 "and refuses nothing again"
bm_is "$(bm_count_log "$CMD_LOG" setExtDO)" "$published" "nothing was published"
bm_check "the token appears in no log, output or metric" no_secret_leaked
bm_done
