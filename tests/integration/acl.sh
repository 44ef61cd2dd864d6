#!/usr/bin/env bash
# The broker's access list keeps forgers out: with contrib/mosquitto's
# bimetri.acl, the plugin and the gateway work as usual, and a client that
# is not the gateway cannot get a forged notification (or command) through
# to the plugin.
. "$top_srcdir/tests/integration/plant.sh"

plant_token
# Users and passwords for the example ACL; the plugin reads its password
# from a file.
printf 'plugin-secret-%s\n' "$RANDOM$RANDOM" >"$T/plugin.pass"
chmod 600 "$T/plugin.pass"
: >"$T/passwd"
mosquitto_passwd -b "$T/passwd" collectd-plant1 "$(cat "$T/plugin.pass")" 2>/dev/null
mosquitto_passwd -b "$T/passwd" gateway gateway-secret 2>/dev/null
mosquitto_passwd -b "$T/passwd" intruder intruder-secret 2>/dev/null
chmod 600 "$T/passwd"
bm_start_broker "allow_anonymous false" "password_file $T/passwd" \
  "acl_file $top_srcdir/contrib/mosquitto/bimetri.acl"
bm_check "the example ACL loads in mosquitto" bm_wait_log "$T/mosquitto.log" 'mosquitto version' 5

bm_start_gwsim --secret-file "$T/secret" --delay 100 --user gateway --password gateway-secret
bm_start_collectd "$(plant_conf "User \"collectd-plant1\"
    PasswordFile \"$T/plugin.pass\"
    ClientId \"collectd-plant1\"")"
bm_check "the plugin connects with its user and PasswordFile" bm_wait_for 10 val_is current_connections 1

bm_notify failure sensors temperature "" "too hot"
bm_check "commands and answers pass the ACL" wait_val bool-pump 1 10

# The intruder forges a notification and a command.
forge() {
  mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -u intruder -P intruder-secret -q 1 -t "$1" -m "$2"
}
forge "$APP_TOPIC" '{"messageType":"notification","appId":"flexyWattApp.1","notificationType":"extDOStateChanged","parameters":{"resourceId":101,"output":4,"status":0}}'
forge resource/commands '{"messageType":"commandMessage","appId":"flexyWattApp.1","brand":"Bimetri","jwtToken":"x.y.z","userId":1,"organizationId":1,"command":"setExtDO","correlationId":"forged-1","parameters":{"resourceId":101,"output":4,"status":0}}'
# Anonymous clients are refused outright.
mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -q 1 -t "$APP_TOPIC" -m '{}' >/dev/null 2>&1
anon=$?
sleep 2
bm_is "$(val bool-pump)" 1 "a forged notification from a client that is not the gateway changes nothing"
bm_is "$(val operations-unsolicited)" 0 "and never reached the plugin"
bm_check "a forged command never reached the gateway" bash -c "! grep -q forged-1 '$T/gwsim.log'"
is_two() { [[ $(grep -cE "Denied PUBLISH from .*'(application/third-party/flexyWattApp/1|resource/commands)'" "$T/mosquitto.log") == 2 ]]; }
bm_check "the broker denied both of the intruder's publications" is_two
bm_isnt "$anon" 0 "an anonymous client is refused"
bm_check "the plugin's password appears in no log" bash -c "! grep -rqsF \"$(cat "$T/plugin.pass")\" '$T'/*.log '$T'/*.out"
bm_done
