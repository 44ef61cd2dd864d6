#!/usr/bin/env bash
# The real threshold plugin drives a Trigger: its start-up OKAY switches
# nothing, crossing FailureMax switches the pump on, coming back switches it
# off, and a value that stops coming (a FAILURE "has not been updated")
# switches only a Trigger that asks for it with OnMissing.
. "$top_srcdir/tests/integration/plant.sh"

plant_token
bm_start_broker
bm_sub_start resource/commands 2
CMD_LOG=$SUB_LOG
bm_start_gwsim --secret-file "$T/secret" --delay 100
bm_start_collectd "LoadPlugin threshold
<Plugin threshold>
  <Plugin \"sensors\">
    <Type \"temperature\">
      FailureMax 70
    </Type>
  </Plugin>
</Plugin>
$(plant_conf '' '<Trigger "sensor-lost">
    Relay "plant1" "fan"
    Plugin "sensors"
    Type "temperature"
    OnMissing 1
  </Trigger>')"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1

temp() { bm_unixsock "PUTVAL \"testhost/sensors/temperature\" interval=1 N:$1" >/dev/null; }

temp 60
bm_check "the threshold plugin reported the first value OKAY" \
  bm_wait_log "$T/collectd.log" 'severity = OKAY, host = testhost, plugin = sensors' 5
sleep 1
bm_is "$(count "$CMD_LOG" setExtDO)" 0 "the start-up OKAY switched nothing"
bm_check "and the plugin says why" grep -q "OKAY not acted on: the relay's state is not known yet" "$T/collectd.log"

for v in 65 72; do temp $v; sleep 1; done
bm_check "crossing FailureMax switches the pump on" wait_val bool-pump 1 10
bm_like "$(grep 'published setExtDO relay "pump"' "$T/collectd.log" | head -1)" \
  'origin "trigger overheat: FAILURE from testhost/sensors/temperature"' \
  "the origin names the Trigger and the threshold notification"
temp 74; sleep 1
temp 66
bm_check "coming back below switches it off" wait_val bool-pump 0 10
bm_is "$(count "$CMD_LOG" setExtDO)" 2 "two commands in all"

# The value stops: the threshold plugin reports it missing (FAILURE).
bm_check "the threshold plugin reports the missing value" \
  bm_wait_log "$T/collectd.log" 'has not been updated for' 20
sleep 1
bm_is "$(val bool-pump)" 0 "a missing value does not act as an over-threshold FAILURE"
bm_check "OnMissing switches the fan on" wait_val bool-fan 1 10
bm_like "$(grep 'published setExtDO relay "fan"' "$T/collectd.log" | head -1)" \
  'origin "trigger sensor-lost: FAILURE \(missing value\) from' "the origin says the value went missing"
bm_check "the token appears in no log, output or metric" no_secret_leaked
bm_done
