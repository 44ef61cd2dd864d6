#!/usr/bin/env bash
# Switch rules in the write callback: the relay follows a value with
# hysteresis; MinOnTime holds across a kill -9 and
# restart (the journal keeps the change times); a value that stops coming
# brings the relay to its FailSafe state; a manual override wins, and once
# it ends the relay follows the Switch again.
. "$top_srcdir/tests/integration/plant.sh"

plant_token
bm_start_broker
bm_sub_start resource/commands 2
CMD_LOG=$SUB_LOG
bm_start_gwsim --secret-file "$T/secret" --delay 100

RULE='<Switch "fan-cooling">
    Relay "plant1" "fan"
    Plugin "sensors"
    Type "temperature"
    TypeInstance "room"
    OnAbove 70
    OffBelow 60
    MinOnTime 6
    StaleAfter 4
    FailSafe 0
  </Switch>
  <Switch "pump2-humidity">
    Relay "plant1" "pump2"
    Plugin "sensors"
    Type "/^humid/"
    TypeInstance "cellar"
    OnAbove 80
    OffBelow 50
  </Switch>'
bm_start_collectd "$(plant_conf '<Relay "pump2">
      ResourceId 103
      Output 1
      ManualControl true
    </Relay>' "$RULE")"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1

temp() { bm_unixsock "PUTVAL \"testhost/sensors/temperature-room\" interval=1 N:$1" >/dev/null; }
fan_commands() { count "$CMD_LOG" '"resourceId":102'; }

temp 65
sleep 1.5
bm_is "$(fan_commands)" 0 "a value between the thresholds decides nothing at start"
temp 72
bm_check "above OnAbove the fan goes on" wait_val bool-fan 1 10
on_at=$(date +%s.%N) # at most a poll (0.1 s) after the confirmation
bm_like "$(grep 'published setExtDO relay "fan"' "$T/collectd.log" | head -1)" \
  'origin "switch fan-cooling: 72 from testhost/sensors/temperature-room"' \
  "the origin names the Switch and the value"
# A Type given as a regex: such a rule sees every value (no exact index).
bm_unixsock "PUTVAL \"testhost/sensors/humidity-cellar\" interval=1 N:90" >/dev/null
bm_check "a Switch whose Type is a regex acts too" wait_val bool-pump2 1 10
temp 65; sleep 0.5; temp 62; sleep 0.5; temp 75; sleep 0.5
bm_is "$(fan_commands)" 1 "between the thresholds (hysteresis) nothing is sent"

# MinOnTime 6 s across a crash: kill -9 right away, restart, go below.
bm_kill_collectd
bm_restart_collectd
bm_check "restarted and connected" bm_wait_for 10 val_is current_connections 1
bm_is "$(val bool-fan)" 1 "the fan's state is restored from the journal"
temp 55
bm_check "below OffBelow within MinOnTime: held, and the plugin says why" \
  bm_wait_log "$T/collectd.log" 'Switch "fan-cooling" wants relay "fan" off: waiting for MinOnTime' 5
bm_is "$(val bool-fan)" 1 "still on"
for _ in 1 2 3 4 5 6 7 8; do temp 55; sleep 0.5; done
bm_check "off once MinOnTime has passed, without a new decision" wait_val bool-fan 0 10
off_at=$(date +%s.%N)
held=$(awk -v a="$on_at" -v b="$off_at" 'BEGIN { printf "%d", (b - a >= 5.8) }')
bm_is "$held" 1 "the fan stayed on at least MinOnTime across the restart"

# StaleAfter 4 s, FailSafe 0: the value stops while the fan is on.
temp 80
bm_check "on again" wait_val bool-fan 1 10
sleep 7 # MinOnTime
bm_check "no value for StaleAfter: FailSafe off" wait_val bool-fan 0 10
bm_check "the FailSafe is logged" grep -q 'Switch "fan-cooling": no value for 4 s: relay "fan" goes to its FailSafe state off' "$T/collectd.log"
# A manual override refuses the Switch; once it ends, the relay follows the
# Switch again, though its decision never changed (level-based).
humid() { bm_unixsock "PUTVAL \"testhost/sensors/humidity-cellar\" interval=1 N:$1" >/dev/null; }
bm_check "pump2 is still on (humidity 90)" wait_val bool-pump2 1 5
bm_putnotif "severity=okay time=$EPOCHSECONDS host=$BM_HOSTNAME plugin=bimetri plugin_instance=plant1 type=relay_command type_instance=pump2 message=\"off 3\""
bm_check "a manual \"off 3\" switches pump2 off" wait_val bool-pump2 0 10
for _ in 1 2 3 4; do humid 85; sleep 0.3; done
bm_is "$(val bool-pump2)" 0 "during the hold the Switch's values change nothing"
bm_is "$(count "$T/collectd.log" 'Switch "pump2-humidity" wants relay "pump2" on: refused: ')" 1 \
  "the refusal is logged once, not for every value"
sleep 2 # the hold's end
for _ in 1 2 3 4 5 6; do humid 85; sleep 0.5; done
bm_check "once the hold ended, the next value (no new decision) switches it on again" \
  wait_val bool-pump2 1 10
bm_check "the token appears in no log, output or metric" no_secret_leaked
bm_done
