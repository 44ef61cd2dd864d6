#!/usr/bin/env bash
# The meta data of the plugin's notifications, as another plugin receives
# them: collectd's exec plugin (NotificationExec) hands each notification
# to a program, meta data included, one "name: value" line each. A
# confirmed command's relay_on carries status and correlationId;
# a command the gateway refuses ends with a relay_result carrying outcome,
# reason, status, correlationId and origin, in that order; a manual
# command the plugin refuses, with outcome.
. "$top_srcdir/tests/integration/plant.sh"

# exec runs programs as a user other than root: nobody gets to the
# directory its program writes one file per notification into.
chmod 711 "$T"
mkdir -m 1777 "$T/notif"
cat >"$T/notif/dump.sh" <<'EOF2'
#!/bin/sh
cat >"$(mktemp "${0%/*}/n.XXXXXX")"
EOF2
chmod 755 "$T/notif/dump.sh"

# dumped TYPE TYPE_INSTANCE: the dump of the first notification of TYPE
# for TYPE_INSTANCE; fails when there is none yet.
dumped() {
  local f
  f=$(grep -lx "Type: $1" "$T"/notif/n.* 2>/dev/null | xargs -r grep -lx "TypeInstance: $2" | head -n 1)
  [[ -n $f ]] && cat "$f"
}

# meta_lines DUMP: its meta data lines, in order (after the fixed fields,
# before the blank line and the message).
meta_lines() {
  sed -n '/^$/q; /^\(Severity\|Time\|Host\|Plugin\|PluginInstance\|Type\|TypeInstance\): /d; p' <<<"$1"
}

plant_token
bm_start_broker
# The simulator answers after 0.5 s (exec skips a notification while the
# program of the one before still runs) and denies resource 102, the fan.
bm_start_gwsim --secret-file "$T/secret" --deny 102 --delay 500
bm_start_collectd "$(plant_conf '' '<Trigger "fan-on">
    Relay "plant1" "fan"
    Plugin "sensors"
    Type "humidity"
    OnFailure 1
  </Trigger>')
LoadPlugin exec
<Plugin exec>
  NotificationExec \"nobody\" \"$T/notif/dump.sh\"
</Plugin>"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1

bm_notify failure sensors temperature "" "too hot"
bm_check "the pump's relay_on reaches the exec plugin" bm_wait_for 10 dumped relay_on pump
on=$(dumped relay_on pump)
bm_like "$(meta_lines "$on")" '^status: 1
correlationId: [0-9a-f]+-[0-9]+$' "relay_on carries status and correlationId"
corr=$(sed -n 's/^correlationId: //p' <<<"$on")
bm_check "its correlationId is the command's" \
  grep -qF "published setExtDO relay \"pump\" (resourceId 101, output 4) status 1, correlationId \"$corr\"" "$T/collectd.log"

bm_notify failure sensors humidity "" "too damp"
bm_check "the fan's refused command ends with a relay_result" bm_wait_for 10 dumped relay_result fan
result=$(dumped relay_result fan)
grep -qx "Severity: FAILURE" <<<"$result"
bm_ok $? "a FAILURE"
bm_like "$(meta_lines "$result")" \
  '^outcome: not_send
reason: not_send: .+
status: 1
correlationId: [0-9a-f]+-[0-9]+
origin: trigger fan-on: FAILURE from testhost/sensors/humidity$' \
  "relay_result carries outcome, reason, status, correlationId and origin"

# A manual command while ManualControl is off (the default): refused.
bm_putnotif "severity=okay time=$EPOCHSECONDS host=testhost plugin=bimetri plugin_instance=plant1 type=relay_command type_instance=pump message=\"off\""
bm_check "the refused manual command ends with a relay_result" bm_wait_for 10 dumped relay_result pump
refused=$(dumped relay_result pump)
grep -qx "Severity: FAILURE" <<<"$refused"
bm_ok $? "a FAILURE"
bm_is "$(meta_lines "$refused")" "outcome: refused" "it carries outcome refused"
bm_done
