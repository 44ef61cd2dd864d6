#!/usr/bin/env bash
# The broker restarts in the middle of QoS 2 commands, once without and once
# with broker persistence: a command whose response was lost, one
# acknowledged whose notification is still due, and one whose PUBLISH the
# broker never read (frozen with SIGSTOP, then killed).  Without
# persistence the plugin gets a new session, and a command still waiting
# for its commandResponse is published again with its own correlationId;
# with it the session (subscription and QoS state) survives a clean
# restart, the log says "session resumed" and nothing is published twice.
# Every command ends in a known outcome: confirmed, or timed out and
# confirmed by its retry.
. "$top_srcdir/tests/integration/plant.sh"

OPTS='AckTimeout 4
    CommandTimeout 10
    Retries 2
    RetryBackoff 0.2'
DELAY=2500 # ms from a command to its notification: longer than a restart

# corr_sim N: the correlationId of the simulator's Nth cmd line.
corr_sim() { awk -v n="$1" '$1 == "cmd" && ++i == n { sub("corr=", "", $2); print $2 }' "$T/gwsim.log"; }
# sim_cmds CORR: how many times the simulator received CORR.
sim_cmds() { count "$T/gwsim.log" "^cmd corr=$1 "; }
# sessions KIND: how many "session KIND" subscriptions collectd logged.
sessions() { count "$T/collectd.log" "subscribed to \"$APP_TOPIC\" \(granted QoS 1, session $1\)"; }
# gwsim ARGS: (re)starts the simulator with these switches.
gwsim() {
  bm_stop_gwsim
  bm_start_gwsim --secret-file "$T/secret" --delay "$DELAY" "$@"
}
# send_command SEVERITY: sends the notification, waits for the simulator to get
# the command and sets CORR to its correlationId.
send_command() {
  local n
  n=$(count "$T/gwsim.log" '^cmd ')
  bm_notify "$1" sensors temperature "" "$1 $((n + 1))"
  bm_wait_log "$T/gwsim.log" '^cmd ' 10 $((n + 1)) || bm_bail "no command reached the simulator"
  CORR=$(corr_sim $((n + 1)))
}
# outcome CORR: how the command CORR ended: "confirmed" (a relay_on/off
# notification names it), "retried" (it timed out, and a relay_on/off
# notification of a later command followed), else "unknown".
outcome() {
  awk -v c="correlationId \"$1\"" '
    index($0, "type = relay_o") && index($0, c) { print "confirmed"; f = 1; exit }
    index($0, c ", attempt") && / ended: no / { to = 1 }
    to && index($0, "type = relay_o") { print "retried"; f = 1; exit }
    END { if (!f) print "unknown" }' "$T/collectd.log"
}
# broker_goes ACTION...: runs ACTION (a broker stop, restart, kill...)
# after noting how many lost connections and sessions collectd had logged.
broker_goes() {
  LOST0=$(count "$T/collectd.log" 'connection to 127.0.0.1:[0-9]+ lost')
  NEW0=$(sessions new)
  RESUMED0=$(sessions resumed)
  "$@"
}
# restarted_with KIND: since broker_goes, the plugin logged a lost
# connection, then a subscription with session KIND: new, resumed, or
# "(new|resumed)" for either.
restarted_with() {
  local before=$((NEW0 + RESUMED0))
  [[ $1 == new ]] && before=$NEW0
  [[ $1 == resumed ]] && before=$RESUMED0
  bm_wait_log "$T/collectd.log" 'connection to 127.0.0.1:[0-9]+ lost' 10 $((LOST0 + 1)) &&
    bm_wait_for 15 bash -c "(( \$(grep -cE 'subscribed to .* session $1\)' '$T/collectd.log') > $before ))" >/dev/null
}
# frozen_command SEVERITY: freezes the broker (SIGSTOP), sends the
# notification and waits until the plugin has written the command's
# PUBLISH, which the broker never reads: the QoS 2 exchange is cut at its
# first step.  Sets CORR.
frozen_command() {
  local n
  n=$(count "$T/collectd.log" '(^|[^e])published setExtDO')
  kill -STOP "$BROKER_PID"
  bm_notify "$1" sensors temperature "" "$1 while frozen"
  bm_wait_log "$T/collectd.log" '(^|[^e])published setExtDO' 10 $((n + 1)) ||
    { kill -CONT "$BROKER_PID"; bm_bail "the plugin published nothing"; }
  CORR=$(grep -E '(^|[^e])published setExtDO' "$T/collectd.log" | tail -1 |
    sed -E 's/.*correlationId "([^"]+)".*/\1/')
}

plant_token
bm_start_broker
gwsim --drop-responses 1
bm_start_collectd "$(plant_conf "$OPTS")"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1
bm_is "$(sessions new)" 1 "a fresh broker: a new session"

# ---- without persistence --------------------------------------------------
# 1. The response is lost, the broker restarts: the session is gone, so the
#    command goes out again, same correlationId.
send_command failure
a=$CORR
bm_check "the simulator dropped the response to $a" grep -q "^drop resp corr=$a\$" "$T/gwsim.log"
broker_goes bm_restart_broker
bm_check "after a broker restart without persistence the session is new" restarted_with new
bm_check "the command without a response is published again, with its own correlationId" \
  bm_wait_log "$T/collectd.log" "republished setExtDO relay \"pump\" .*status 1, correlationId \"$a\", attempt 1" 5
bm_check "and it is confirmed: the pump is on" wait_val bool-pump 1 15
bm_check "by a notification for $a" grep -qE "type = relay_on, type_instance = pump, .*correlationId \"$a\"" "$T/collectd.log"
bm_diag "the simulator received $a $(sim_cmds "$a") time(s)"

# 2. The command was acknowledged; its notification is due after the
#    restart. Acknowledged commands are not published again.
send_command okay
b=$CORR
bm_check "the plugin received the response to $b" \
  bm_wait_log "$T/collectd.log" "received commandResponse correlationId \"$b\" result sent" 5
broker_goes bm_restart_broker
bm_check "the session is new again" restarted_with new
bm_check "the acknowledged command is confirmed: the pump is off" wait_val bool-pump 0 15
bm_is "$(sim_cmds "$b")" 1 "it was not published again"
bm_check "by the notification for $b" grep -qE "type = relay_off, type_instance = pump, .*correlationId \"$b\"" "$T/collectd.log"

# 3. The broker is frozen when the command goes out, then crashes: the
#    QoS 2 exchange never got past the PUBLISH.  A new session: the
#    command, without a response, is published again.
frozen_command failure
h=$CORR
broker_goes bm_kill_broker
bm_start_broker
bm_check "after the crash the session is new" restarted_with new
bm_check "the plugin published it again" \
  bm_wait_log "$T/collectd.log" "republished setExtDO .*correlationId \"$h\"" 5
bm_check "the pump ends on" wait_val bool-pump 1 15
# Whether the republished command finds the simulator already reconnected
# to the new broker is a race: it is confirmed, or it times out and its
# retry is.
bm_like "$(outcome "$h")" '^(confirmed|retried)$' "the command cut off in its QoS 2 exchange ends in a known outcome"
bm_diag "$h: $(outcome "$h"); the simulator received it $(sim_cmds "$h") time(s)"
bm_is "$(sessions resumed)" 0 "no session was resumed without persistence"

# ---- with persistence -----------------------------------------------------
broker_goes bm_stop_broker
bm_start_broker "persistence true"
bm_check "connected to a broker with persistence" restarted_with new
bm_check "subscribed" bm_wait_for 15 val_is current_connections 1

# 4. The response is lost, the broker restarts cleanly and keeps the
#    session: nothing is published again, the notification confirms.
gwsim --drop-responses 1
send_command okay
c=$CORR
bm_check "the simulator dropped the response to $c" grep -q "^drop resp corr=$c\$" "$T/gwsim.log"
broker_goes bm_restart_broker
bm_check "the broker saved its database" test -s "$T/mosquitto.db"
bm_check "after a restart with persistence the session is resumed" restarted_with resumed
bm_check "the command is confirmed: the pump is off" wait_val bool-pump 0 15
bm_is "$(sim_cmds "$c")" 1 "it was not published again"
bm_check "by the notification for $c" grep -qE "type = relay_off, type_instance = pump, .*correlationId \"$c\"" "$T/collectd.log"
bm_is "$(grep -c "republished setExtDO.*correlationId \"$c\"" "$T/collectd.log")" 0 "the log shows no republish"

# 5. Acknowledged, notification due after the restart.
send_command failure
d=$CORR
bm_check "the plugin received the response to $d" \
  bm_wait_log "$T/collectd.log" "received commandResponse correlationId \"$d\" result sent" 5
broker_goes bm_restart_broker
bm_check "the session is resumed again" restarted_with resumed
bm_check "the acknowledged command is confirmed: the pump is on" wait_val bool-pump 1 15
bm_is "$(sim_cmds "$d")" 1 "it was not published again"

# 6. Response and notification both lost, the session kept: nothing
#    answers the command, which times out and is retried with a new
#    correlationId.
gwsim --drop-responses 1 --drop-notifications 1
send_command okay
e=$CORR
broker_goes bm_restart_broker
bm_check "the session is resumed" restarted_with resumed
bm_check "the unanswered command times out" \
  bm_wait_log "$T/collectd.log" "correlationId \"$e\", attempt 1\) ended: no commandResponse within 4 s" 10
bm_check "the retry confirms it: the pump is off" wait_val bool-pump 0 15
f=$(corr_sim "$(count "$T/gwsim.log" '^cmd ')")
bm_isnt "$f" "$e" "the retry has a new correlationId ($f)"
bm_is "$(sim_cmds "$e")" 1 "the timed-out command was not published again"

# 7. Frozen during the PUBLISH, then a crash: the broker comes back with
#    what it saved at its last clean exit (so the session looks resumed,
#    but the cut exchange is not in it).  The command still ends in a known
#    outcome: confirmed, or timed out and confirmed by its retry.
gwsim
frozen_command failure
g=$CORR
broker_goes bm_kill_broker
bm_start_broker "persistence true"
bm_check "the plugin reconnects after the broker crash" restarted_with '(new|resumed)'
bm_check "the pump ends on" wait_val bool-pump 1 20
bm_like "$(outcome "$g")" '^(confirmed|retried)$' "the command cut off by the crash ends in a known outcome"
bm_diag "after the crash: $(grep -oE 'session (new|resumed)' "$T/collectd.log" | tail -1);" \
  "$g: $(outcome "$g"); the simulator received it $(sim_cmds "$g") time(s)"

# ---- every command has a known outcome -------------------------------------
unknown=
for x in $(grep -oE 'published setExtDO .*correlationId "[^"]+"' "$T/collectd.log" |
  sed -E 's/.*correlationId "([^"]+)"/\1/' | sort -u); do
  [[ $(outcome "$x") == unknown ]] && unknown+="$x "
done
bm_is "$unknown" "" "every command published was confirmed, or timed out and retried until confirmed"
bm_check "nothing is pending" wait_val pending_operations-pump 0 5
bm_is "$(count "$T/collectd.log" 'gave up')" 0 "no relay gave up"
bm_check "collectd is still running" kill -0 "$COLLECTD_PID"
bm_is "$(count "$T/collectd.log" 'closed the connection right after a QoS')" 0 \
  "a broker that restarts is not taken for one refusing QoS 2"
bm_done
