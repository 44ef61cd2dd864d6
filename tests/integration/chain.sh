#!/usr/bin/env bash
# A Trigger may watch the plugin's own notifications: "pump on, then fan
# on".  The chain works end to end; the plugin's own reports never reach a
# Trigger that does not name Plugin "bimetri".
. "$top_srcdir/tests/integration/plant.sh"

plant_token
bm_start_broker
bm_sub_start resource/commands 2
CMD_LOG=$SUB_LOG
bm_start_gwsim --secret-file "$T/secret" --delay 100
bm_start_collectd "$(plant_conf '' '<Trigger "pump-then-fan">
    Relay "plant1" "fan"
    Plugin "bimetri"
    PluginInstance "plant1"
    Type "relay_on"
    TypeInstance "pump"
    OnOkay 1
  </Trigger>
  <Trigger "anything-okay">
    Relay "plant1" "fan"
    OnOkay 0
  </Trigger>')"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1

bm_notify failure sensors temperature "" "too hot"
bm_check "the pump goes on" wait_val bool-pump 1 10
bm_check "and, through the plugin's relay_on notification, the fan" wait_val bool-fan 1 10
bm_like "$(grep 'published setExtDO relay "fan"' "$T/collectd.log" | head -1)" \
  'origin "trigger pump-then-fan: OKAY from testhost/bimetri-plant1/relay_on-pump"' \
  "the fan's command names the chain in its origin"
sleep 1.5
bm_is "$(count "$CMD_LOG" '"resourceId":102')" 1 \
  "a catch-all Trigger without Plugin \"bimetri\" ignores the plugin's own OKAY reports"
bm_done
