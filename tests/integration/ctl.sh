#!/usr/bin/env bash
# bimetri-ctl against a real broker, the simulator and collectd with the
# plugin: every outcome of `set` and its exit status, --json output that
# parses, `status` on the journal a running plugin writes (the trigger's
# origin, a hand switch by bimetri-ctl, an Interlock), and `watch` with
# every token shown as its fingerprint only.
. "$top_srcdir/tests/integration/plant.sh"

CTL=$top_builddir/bimetri-ctl
[[ -x $CTL ]] || bm_bail "$CTL is not built"
PYTHON=/usr/bin/python3
[[ -x $PYTHON ]] || PYTHON=$(command -v python3) || bm_bail "python3 is missing"

plant_token
bm_start_broker
bm_sub_start resource/commands 2
CMD_LOG=$SUB_LOG
# The file collectd reads later: globals, other plugins, then <Plugin
# bimetri>. bimetri-ctl must pick the bimetri block out of it.
bm_write_collectd_conf "$(plant_conf)"
TOKEN=$(<"$T/token")
FP=$(printf '%s' "$TOKEN" | sha256sum | cut -c1-12)

# run NAME ARGS...: runs bimetri-ctl on $T/collectd.conf, stdout in
# $T/NAME.out and stderr in $T/NAME.err; sets RC to its exit status.
run() {
  local name=$1
  shift
  RC=0
  timeout 60 "$CTL" -C "$T/collectd.conf" "$@" >"$T/$name.out" 2>"$T/$name.err" || RC=$?
}

# json_ok FILE: every line of FILE is a JSON object with a "type".
json_ok() {
  "$PYTHON" -c '
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert lines, "no output"
for l in lines:
    o = json.loads(l)
    assert isinstance(o, dict) and "type" in o, l
' "$1"
}

# json_get FILE TYPE KEY: the KEY (a.b for nested) of the last line of TYPE.
json_get() {
  "$PYTHON" -c '
import json, sys
v = None
for l in open(sys.argv[1]).read().splitlines():
    o = json.loads(l)
    if o.get("type") == sys.argv[2]:
        v = o
        for k in sys.argv[3].split("."):
            v = v.get(k) if isinstance(v, dict) else None
print("" if v is None else v)
' "$@"
}

restart_gwsim() {
  bm_stop_gwsim
  bm_start_gwsim "$@"
}

# ---- set: the outcomes -------------------------------------------------

bm_start_gwsim --secret-file "$T/secret" --delay 100
run on set pump on
bm_is "$RC" 0 "set pump on: confirmed, exit 0"
bm_like "$(<"$T/on.out")" 'result: confirmed: the device reports relay "pump" is on' \
  "set says the device confirmed the state"
bm_like "$(grep setExtDO "$CMD_LOG" | tail -1)" \
  '"appId":"flexyWattApp\.1","brand":"Bimetri","jwtToken":"[^"]+","userId":12345,"organizationId":23456,"command":"setExtDO","correlationId":"ctl-[0-9a-f]{16}-1","parameters":\{"resourceId":101,"output":4,"status":1\}' \
  "the command has the plugin's envelope and a ctl- correlationId"
bm_check "the simulator accepted the token" grep -qE "^cmd corr=ctl-[0-9a-f]{16}-1 res=101 out=4 status=1 token=$FP" "$T/gwsim.log"

run off set pump off --timeout 5
bm_is "$RC" 0 "set pump off: confirmed, exit 0"

run json --json set pump on
bm_is "$RC" 0 "--json set: exit 0"
bm_check "--json: every line is a JSON object" json_ok "$T/json.out"
bm_is "$(json_get "$T/json.out" result outcome)" confirmed "--json: the result is confirmed"
bm_like "$(json_get "$T/json.out" published correlationId)" '^ctl-[0-9a-f]{16}-1$' \
  "--json: the published correlationId"
bm_is "$(json_get "$T/json.out" published token)" "$FP" "--json: the token as its fingerprint"
bm_is "$(json_get "$T/json.out" response result)" sent "--json: the response"
bm_is "$(json_get "$T/json.out" notification status)" 1 "--json: the notification"

# The device reports the other state: exit 1. The simulator stays silent
# after its response; a notification with our correlationId says "off".
restart_gwsim --no-notify --delay 100
lines=$(bm_count_log "$CMD_LOG" setExtDO)
timeout 60 "$CTL" -C "$T/collectd.conf" set fan on --timeout 10 >"$T/other.out" 2>"$T/other.err" &
ctl_pid=$!
bm_wait_log "$CMD_LOG" '"correlationId":"ctl-' 10 $((lines + 1))
corr=$(grep -oE 'ctl-[0-9a-f]{16}-1' "$CMD_LOG" | tail -1)
bm_wait_log "$T/other.out" '^response: sent' 10
bm_pub "$APP_TOPIC" "{\"messageType\":\"notification\",\"appId\":\"flexyWattApp.1\",\"correlationId\":\"$corr\",\"command\":\"setExtDO\",\"notificationType\":\"extDOStateChanged\",\"userName\":\"test\",\"userId\":12345,\"parameters\":{\"resourceId\":102,\"output\":1,\"status\":0}}"
RC=0
wait "$ctl_pid" || RC=$?
bm_is "$RC" 1 "the device reports the other state: exit 1"
bm_like "$(<"$T/other.out")" 'result: other_state: the device reports relay "fan" is off' \
  "set says which state the device reports"

restart_gwsim --deny 101 --delay 100
run notsend set pump on
bm_is "$RC" 3 "not_send: exit 3"
bm_like "$(<"$T/notsend.out")" 'not_send: The user does not have access rights to the resource!' \
  "not_send: the gateway's reason is shown"

restart_gwsim --outputs 2 --delay 100
run failed set pump on
bm_is "$RC" 4 "failed (an output the device lacks): exit 4"

restart_gwsim --result send_no_ack --delay 100
run noack set pump on
bm_is "$RC" 5 "send_no_ack: exit 5"

printf 'another-secret-entirely-0123456789' >"$T/other-secret"
restart_gwsim --secret-file "$T/other-secret" --delay 100
run unauth --json set pump on
bm_is "$RC" 6 "unauthorized (a token of another secret): exit 6"
bm_is "$(json_get "$T/unauth.out" result exit)" 6 "--json: the result carries the exit status"

# A token known to be expired is not sent at all.
"$GWSIM" --secret-file "$T/secret" --print-token 1 >"$T/expired-token"
bm_write_collectd_conf "$(plant_conf 'TokenLeeway 0')"
cp "$T/collectd.conf" "$T/leeway0.conf"
sleep 2
lines=$(bm_count_log "$CMD_LOG" setExtDO)
RC=0
timeout 60 "$CTL" -C "$T/leeway0.conf" --token-file "$T/expired-token" set pump on \
  >"$T/expired.out" 2>"$T/expired.err" || RC=$?
bm_is "$RC" 6 "an expired token: exit 6"
bm_like "$(<"$T/expired.err")" 'not sent: token [0-9a-f]{12}: token expired' \
  "an expired token: nothing is sent, the reason names the fingerprint"
bm_is "$(bm_count_log "$CMD_LOG" setExtDO)" "$lines" "an expired token: nothing was published"
bm_write_collectd_conf "$(plant_conf)"

restart_gwsim --no-notify --delay 100
run nonotif set pump on --timeout 1.5
bm_is "$RC" 7 "no notification: exit 7"
bm_like "$(<"$T/nonotif.out")" 'result: timeout: queued, but no notification within 1.5 s' \
  "no notification: the timeout says the command was queued"

bm_stop_gwsim
run noresp set pump on --timeout 1
bm_is "$RC" 7 "no gateway: exit 7"
bm_like "$(<"$T/noresp.out")" 'result: timeout: no commandResponse within 1 s' \
  "no gateway: no commandResponse"

port=$(bm_free_port 1)
run nobroker --port "$port" set pump on
bm_is "$RC" 8 "no broker: exit 8"
bm_like "$(<"$T/nobroker.err")" "no MQTT session with the broker at 127.0.0.1:$port|cannot connect" \
  "no broker: the error names the address"
run nobrokerjson --json --port "$port" set pump on
bm_is "$RC" 8 "no broker, --json: exit 8"
bm_check "no broker, --json: the error is a JSON object" json_ok "$T/nobrokerjson.out"
bm_is "$(json_get "$T/nobrokerjson.out" error exit)" 8 "no broker, --json: the error's exit"

# A broker that takes the TCP connection but never answers (stopped):
# libmosquitto gives the connect KeepAlive seconds, and bimetri-ctl says so.
plant_conf 'KeepAlive 5' >"$T/silent.conf"
kill -STOP "$BROKER_PID"
RC=0
timeout 60 "$CTL" -C "$T/silent.conf" set pump on >"$T/silent.out" 2>"$T/silent.err" || RC=$?
kill -CONT "$BROKER_PID"
bm_is "$RC" 8 "a silent broker: exit 8"
bm_like "$(<"$T/silent.err")" 'not connected within KeepAlive \(5 s\): no CONNACK' \
  "a silent broker: the error says no CONNACK came within KeepAlive"

# Usage and configuration errors: exit 2, nothing sent.
lines=$(bm_count_log "$CMD_LOG" setExtDO)
run badrelay set pipe on
bm_is "$RC" 2 "an unknown relay: exit 2"
bm_like "$(<"$T/badrelay.err")" 'no Relay "pipe" \(it has "pump", "fan"\)' \
  "an unknown relay: the relays are listed"
run badstate set pump maybe
bm_is "$RC" 2 "a bad state: exit 2"
run badcmd frobnicate
bm_is "$RC" 2 "an unknown command: exit 2"
run badopt status --count 3
bm_is "$RC" 2 "an option of another command: exit 2"
RC=0
"$CTL" -C "$T/no-such.conf" status >/dev/null 2>"$T/noconf.err" || RC=$?
bm_is "$RC" 2 "a missing configuration file: exit 2"
printf 'LoadPlugin bimetri\n<Plugin bimetri>\n  <Gateway "g">\n    Port "x"\n  </Gateway>\n</Plugin>\n' >"$T/bad.conf"
RC=0
"$CTL" -C "$T/bad.conf" status >/dev/null 2>"$T/badconf.err" || RC=$?
bm_is "$RC" 2 "a bad option value: exit 2"
bm_like "$(<"$T/badconf.err")" 'bad.conf:4: <Gateway "g">, option "Port": expects exactly one number argument' \
  "a bad option value: the error names the file, line, block and option"
printf '<Plugin bimetri>\n  <Gateway "g">\n</Plugin>\n' >"$T/syntax.conf"
RC=0
"$CTL" -C "$T/syntax.conf" status >/dev/null 2>"$T/syntax.err" || RC=$?
bm_is "$RC" 2 "a syntax error: exit 2"
bm_like "$(<"$T/syntax.err")" 'syntax.conf:3: </Plugin> closes <Gateway> opened on line 2' \
  "a syntax error names the line"
bm_is "$(bm_count_log "$CMD_LOG" setExtDO)" "$lines" "usage errors publish nothing"
bm_check "--help exits 0" "$CTL" --help
bm_like "$("$CTL" --version)" '^bimetri-ctl \(collectd-bimetri\) [0-9]' "--version"

# Flags only, no configuration, a relay by address.
bm_start_gwsim --secret-file "$T/secret" --delay 100
RC=0
timeout 60 "$CTL" --no-config --host 127.0.0.1 --port "$BROKER_PORT" \
  --app-name flexyWattApp --instance-id 1 --user-id 12345 --org-id 23456 \
  --token-file "$T/token" set --resource-id 102 --output 1 off \
  >"$T/flags.out" 2>"$T/flags.err" || RC=$?
bm_is "$RC" 0 "--no-config with flags, --resource-id/--output: confirmed"

# ---- watch ---------------------------------------------------------------

timeout 60 "$CTL" -C "$T/collectd.conf" watch --commands --count 3 --duration 30 \
  >"$T/watch.out" 2>"$T/watch.err" &
watch_pid=$!
bm_wait_log "$T/watch.err" 'watching' 10
run wset set pump off
RC=0
wait "$watch_pid" || RC=$?
bm_is "$RC" 0 "watch --count 3 ends after three messages"
bm_like "$(grep commandMessage "$T/watch.out")" "resource/commands commandMessage correlationId=\"ctl-[0-9a-f]{16}-1\" command=\"setExtDO\" resourceId=101 output=4 status=0 .* token=$FP" \
  "watch shows the command, its token as the fingerprint"
bm_check "watch shows the response" grep -q 'commandResponse correlationId="ctl-.* result=sent' "$T/watch.out"
bm_check "watch shows the notification" grep -q 'notification correlationId="ctl-.* notificationType="extDOStateChanged" resourceId=101 output=4 status=0' "$T/watch.out"
bm_check "watch never prints the token" bash -c "! grep -qF -e '$TOKEN' '$T/watch.out' '$T/watch.err'"

# An undecodable message that carries a token: error line, token redacted.
timeout 60 "$CTL" -C "$T/collectd.conf" --json watch --count 2 --duration 30 \
  >"$T/watchj.out" 2>"$T/watchj.err" &
watch_pid=$!
bm_wait_log "$T/watchj.err" 'watching' 10
bm_pub "$APP_TOPIC" "{\"messageType\":\"commandMessage\",\"jwtToken\":\"$TOKEN\",\"bad\":"
bm_pub "$APP_TOPIC" "garbage with $TOKEN inside"$'\x01'
RC=0
wait "$watch_pid" || RC=$?
bm_is "$RC" 0 "watch --json --count 2: exit 0"
bm_check "watch --json: every line is a JSON object" json_ok "$T/watchj.out"
bm_is "$(grep -c '"type":"error"' "$T/watchj.out")" 2 "two undecodable messages, two error lines"
bm_check "the excerpts show the token's fingerprint" grep -qF "<token $FP>" "$T/watchj.out"
bm_check "watch --json never prints the token" bash -c "! grep -qF -e '$TOKEN' '$T/watchj.out' '$T/watchj.err'"

# A notification with a bad field the plugin does not act on: shown, the
# field's error as ignored= (text) or "ignored" (JSON), its state whole.
long=$(printf 'u%.0s' {1..300})
spare_notif='{"messageType":"notification","appId":"flexyWattApp.1","notificationType":"extDOStateChanged","userName":"'$long'","parameters":{"resourceId":102,"output":1,"status":1}}'
for fmt in text json; do
  args=()
  [[ $fmt == json ]] && args=(--json)
  timeout 60 "$CTL" -C "$T/collectd.conf" "${args[@]}" watch --count 1 --duration 30 \
    >"$T/watchs-$fmt.out" 2>"$T/watchs-$fmt.err" &
  watch_pid=$!
  bm_wait_log "$T/watchs-$fmt.err" 'watching' 10
  bm_pub "$APP_TOPIC" "$spare_notif" 1
  RC=0
  wait "$watch_pid" || RC=$?
  bm_is "$RC" 0 "watch ($fmt) of a notification with a bad userName: exit 0"
done
bm_like "$(<"$T/watchs-text.out")" 'notification correlationId=none notificationType="extDOStateChanged" resourceId=102 output=1 status=1 appId="flexyWattApp.1" ignored="field \\"userName\\": longer than 255 bytes"$' \
  "watch shows it with its state, without the userName, and why"
bm_like "$(<"$T/watchs-json.out")" '"resourceId":102,"output":1,"status":1,"ignored":"field \\"userName\\": longer than 255 bytes"\}$' \
  "watch --json: the same as \"ignored\""

timeout 60 "$CTL" -C "$T/collectd.conf" watch --count 1 --duration 1 >"$T/watcht.out" 2>"$T/watcht.err"
bm_is "$?" 7 "watch --count with too few messages in --duration: exit 7"

# ---- status: the journal of a running plugin ------------------------------

bm_start_collectd "$(plant_conf)"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1
bm_notify failure sensors temperature "" "too hot"
bm_check "the trigger switched the pump on" wait_val bool-pump 1 10

# pump_on_in_status: the status output shows the pump on.
pump_on_in_status() {
  "$CTL" -C "$T/collectd.conf" status >"$T/status.out" 2>"$T/status.err" &&
    grep -qE '^relay "pump" \(resourceId 101, output 4\): on since [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}[+-][0-9]{2}:[0-9]{2}$' "$T/status.out"
}
bm_check "status shows the pump on, since when (local ISO 8601)" bm_wait_for 5 pump_on_in_status
bm_like "$(<"$T/status.out")" 'origin: "trigger overheat: FAILURE from testhost/sensors/temperature"' \
  "status shows who asked: the trigger's origin"
bm_like "$(<"$T/status.out")" 'set by the plugin.s command below' "status: the plugin's command set it"
bm_like "$(<"$T/status.out")" 'outcome: confirmed at [0-9T:+-]+ \(response sent "Command Queued"\)' \
  "status: the command's outcome"
bm_like "$(<"$T/status.out")" 'pending commands: none' "status: nothing pending"

run statusj --json status
bm_is "$RC" 0 "status --json: exit 0"
bm_check "status --json: every line is a JSON object" json_ok "$T/statusj.out"
"$PYTHON" -c '
import json, sys
relays = {}
for l in open(sys.argv[1]):
    o = json.loads(l)
    if o["type"] == "relay":
        relays[o["relay"]] = o
p = relays["pump"]
assert p["state"] == "on" and p["changedBy"] == "command", p
assert p["lastCommand"]["outcome"] == "confirmed", p
assert p["lastCommand"]["origin"].startswith("trigger overheat: FAILURE"), p
assert relays["fan"]["configured"] is True, relays
' "$T/statusj.out"
bm_ok $? "status --json: the pump is on, confirmed, with the trigger's origin"

run history status --history
bm_like "$(<"$T/history.out")" 'command  relay "pump" on correlationId "[0-9a-f]{16}-[0-9]+" attempt 1 origin "trigger overheat' \
  "status --history lists the command record"
bm_like "$(<"$T/history.out")" 'confirm  relay "pump" is on' "status --history lists the confirmation"

# An Interlock in the configuration: the fan may not go on while the pump is.
bm_write_collectd_conf "$(plant_conf '' 'Interlock "plant1" "pump" "fan"')"
mv "$T/collectd.conf" "$T/interlock.conf"
bm_write_collectd_conf "$(plant_conf)" # collectd's own file stays as it was
lines=$(bm_count_log "$CMD_LOG" setExtDO)
RC=0
timeout 60 "$CTL" -C "$T/interlock.conf" set fan on >"$T/il.out" 2>"$T/il.err" || RC=$?
bm_is "$RC" 9 "an Interlock with the pump on refuses the fan: exit 9"
bm_like "$(<"$T/il.err")" 'relay "fan" may not be on together with relay "pump", which is on \(Interlock\)' \
  "the refusal names the relay that is on"
bm_is "$(bm_count_log "$CMD_LOG" setExtDO)" "$lines" "the refused command was not published"
RC=0
timeout 60 "$CTL" -C "$T/interlock.conf" set fan on --force >"$T/ilf.out" 2>"$T/ilf.err" || RC=$?
bm_is "$RC" 0 "--force switches anyway"

# The plugin sees the hand switch as someone else's; status says who.
fan_by_ctl() {
  "$CTL" -C "$T/collectd.conf" status >"$T/status2.out" 2>&1 &&
    grep -qE '^relay "fan" \(resourceId 102, output 1\): on since' "$T/status2.out"
}
bm_check "status shows the fan on after the hand switch" bm_wait_for 5 fan_by_ctl
bm_like "$(<"$T/status2.out")" 'set by correlationId "ctl-[0-9a-f]{16}-1": bimetri-ctl, by hand' \
  "status: the fan was switched by bimetri-ctl"

bm_check "the token appears in no output of bimetri-ctl" \
  bash -c "! grep -rqsF -e '$TOKEN' --include='*.out' --include='*.err' '$T'"
bm_stop_collectd
bm_is $? 0 "collectd shuts down cleanly"
bm_done
