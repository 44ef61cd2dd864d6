#!/usr/bin/env bash
# Who may switch a relay: manual control is refused while ManualControl is
# off; with it on, an override wins over Triggers until "auto" or its hold
# time; every relay's command budget stops a flood; an interlock keeps two
# relays from being on together, whoever asks.
. "$top_srcdir/tests/integration/plant.sh"

plant_token
bm_start_broker
bm_sub_start resource/commands 2
CMD_LOG=$SUB_LOG
bm_start_gwsim --secret-file "$T/secret" --delay 100

commands() { count "$CMD_LOG" '"resourceId":101,"output":4'; }

# 1. ManualControl off (the default): refused, reported, nothing sent.
bm_start_collectd "$(plant_conf 'MaxCommandsPerMinute 3')"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1
manual pump on
bm_check "a manual command is refused while ManualControl is off" \
  bm_wait_log "$T/collectd.log" 'Notification: severity = FAILURE, .*type = relay_result, type_instance = pump, message = manual command "on" for relay "pump" refused: ManualControl is off \(from host "testhost"\)' 5
sleep 1
bm_is "$(commands)" 0 "and nothing was published"

# 2. The budget: 3 commands a minute, whoever asks.
for i in 1 2 3 4 5; do
  bm_notify failure sensors temperature "" "hot $i"; sleep 0.4
  bm_notify okay sensors temperature "" "cool $i"; sleep 0.4
done
sleep 1
bm_is "$(commands)" 3 "a flood of Trigger notifications gets 3 commands through in a minute"
bm_check "the refusal names the input that kept asking" \
  grep -qE 'type_instance = pump, message = relay "pump" not switched (on|off): refused: command budget of 3 per minute spent; the last request came from trigger overheat' "$T/collectd.log"
bm_is "$(grep -c 'command budget of 3 per minute spent' "$T/collectd.log")" 2 \
  "reported once a minute (a log line and a notification), not per request"
refused_some() { local v; v=$(val operations-refused 2>/dev/null) && ((v >= 2)); }
bm_check "every refused request counts as refused" bm_wait_for 5 refused_some
bm_stop_collectd

# 3. ManualControl on for the pump; an interlock between pump and fan.
cat >"$T/extra.conf" <<EOF2
  Interlock "plant1" "pump" "fan"
EOF2
rm -f "$T"/bimetri-plant1.journal
: >"$CMD_LOG"
bm_start_collectd "$(plant_conf 'ManualControl true' "$(cat "$T/extra.conf")")"
bm_check "connected again" bm_wait_for 10 val_is current_connections 1
manual pump on
bm_check "a manual on switches the pump on" wait_val bool-pump 1 10
bm_like "$(grep 'published setExtDO relay "pump"' "$T/collectd.log" | tail -1)" 'origin "manual on from host testhost"' \
  "the audit trail names the manual command and its host"
bm_notify okay sensors temperature "" "cool"
sleep 1.5
bm_is "$(val bool-pump)" 1 "a Trigger's OKAY does not touch an overridden relay"
bm_check "and the plugin says so" grep -q 'Trigger "overheat" not acted on: a manual override holds relay "pump" on' "$T/collectd.log"

# The interlock: the fan may not go on while the pump is on.
bm_pub "$APP_TOPIC" '{"messageType":"notification","appId":"flexyWattApp.1","notificationType":"extDOStateChanged","parameters":{"resourceId":102,"output":1,"status":0}}' 1
bm_check "the fan's state is known (off)" wait_val bool-fan 0 5
bm_putnotif "severity=okay time=$(date +%s) host=testhost plugin=bimetri plugin_instance=plant1 type=relay_command type_instance=fan message=\"on\""
bm_check "a manual on for the fan is refused by the interlock" \
  bm_wait_log "$T/collectd.log" 'manual command "on" for relay "fan" refused: interlocked with relay "pump", which is on' 5
bm_is "$(count "$CMD_LOG" '"resourceId":102')" 0 "and no command went out for the fan"

# auto: the Trigger drives the pump again.
manual pump auto
bm_notify failure sensors temperature "" "hot"
sleep 0.5
bm_notify okay sensors temperature "" "cool again"
bm_check "after auto the Trigger switches the pump off" wait_val bool-pump 0 10

# A hold time ends the override by itself.
manual pump "on 2"
bm_check "manual on with a hold time" wait_val bool-pump 1 10
bm_notify okay sensors temperature "" "cool"
sleep 1
bm_is "$(val bool-pump)" 1 "held during the hold time"
sleep 1.5
bm_notify failure sensors temperature "" "hot"
sleep 0.3
bm_notify okay sensors temperature "" "cool after the hold"
bm_check "after the hold time the Trigger drives it again" wait_val bool-pump 0 10

manual pump "sideways"
bm_check "an invalid manual command is refused with the expected syntax" \
  bm_wait_log "$T/collectd.log" 'manual command "sideways" for relay "pump" refused: expected "on", "off" or "auto"' 5
bm_check "the token appears in no log, output or metric" no_secret_leaked
bm_done
