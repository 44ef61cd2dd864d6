# plant.sh - the plant every integration test drives, sourced after lib.sh.
#
# One gateway "plant1" (appId flexyWattApp.1) with relays "pump"
# (resourceId 101, output 4) and "fan" (102, output 1), and a Trigger
# "overheat": FAILURE of sensors/temperature switches the pump on, OKAY off.
# The simulator and the plugin share an HS256 secret; $T/token is signed
# with it.

. "$top_srcdir/tests/lib.sh"

GWSIM=$top_builddir/bimetri-gwsim
APP_TOPIC=application/third-party/flexyWattApp/1

# plant_token [LIFETIME_S [FILE]]: writes the shared secret ($T/secret) and a
# token signed with it (default $T/token), valid for LIFETIME_S (86400,
# beyond the default TokenWarn).
plant_token() {
  [[ -f $T/secret ]] || printf 'integration-secret-%s' "$RANDOM$RANDOM$RANDOM$RANDOM" >"$T/secret"
  "$GWSIM" --secret-file "$T/secret" --print-token "${1:-86400}" >"${2:-$T/token}"
}

# plant_conf [GATEWAY_OPTIONS [MORE_BLOCKS]]: prints the <Plugin bimetri>
# configuration (with LoadPlugin) for $BROKER_PORT.
plant_conf() {
  cat <<EOF2
LoadPlugin bimetri
<Plugin bimetri>
  <Gateway "plant1">
    Host "127.0.0.1"
    Port $BROKER_PORT
    AppName "flexyWattApp"
    InstanceId "1"
    UserId 12345
    OrganizationId 23456
    TokenFile "$T/token"
    ${1:-}
    <Relay "pump">
      ResourceId 101
      Output 4
    </Relay>
    <Relay "fan">
      ResourceId 102
      Output 1
    </Relay>
  </Gateway>
  <Trigger "overheat">
    Relay "plant1" "pump"
    Plugin "sensors"
    Type "temperature"
    OnFailure 1
    OnOkay 0
  </Trigger>
  ${2:-}
</Plugin>
EOF2
}

# plant_start_interval SECONDS [GATEWAY_OPTIONS]: starts the broker, the
# simulator and collectd with plant_conf's configuration, the plugin
# loaded under its own Interval SECONDS, and the threshold plugin watching
# its bool and pending_operations values (Persist false: it reports a value
# gone missing from collectd's cache).
plant_start_interval() {
  local conf
  plant_token
  bm_start_broker
  bm_start_gwsim --secret-file "$T/secret" --delay 0
  conf=$(plant_conf "${2:-}")
  conf=${conf/LoadPlugin bimetri/<LoadPlugin bimetri>
  Interval $1
</LoadPlugin>}
  bm_start_collectd "$conf
LoadPlugin threshold
<Plugin threshold>
  <Plugin \"bimetri\">
    <Type \"pending_operations\">
      FailureMax 5
      Persist false
    </Type>
    <Type \"bool\">
      FailureMax 5
      Persist false
    </Type>
  </Plugin>
</Plugin>"
}

# notif_json CORR RESOURCE OUTPUT STATUS: an extDOStateChanged notification
# as the gateway sends it (the protocol's example shape); CORR "" leaves
# the correlationId out.
notif_json() {
  local corr=
  [[ -n $1 ]] && corr="\"correlationId\":\"$1\","
  printf '{"messageType":"notification","appId":"flexyWattApp.1",%s"command":"setExtDO","notificationType":"extDOStateChanged","userName":"Flexywatt User","userId":12345,"parameters":{"resourceId":%s,"brand":"Bimetri","model":"BMM620","networkId":"26:AA:E0:23:23:5E","organizationId":23456,"output":%s,"status":%s}}' \
    "$corr" "$2" "$3" "$4"
}

# corr_of TEXT: the correlationId in each line of TEXT, a command's or a
# notification's payload (as mosquitto_sub prints it).
corr_of() { sed -E 's/.*"correlationId":"([^"]+)".*/\1/' <<<"$1"; }

# unsent_corr: the correlationId of the first command collectd.log says
# ended "not sent: journal ..." (its journal write or fsync failed).
unsent_corr() {
  grep -oE 'correlationId "[0-9a-f]{16}-[0-9]+", attempt [0-9]+\) ended: not sent: journal' "$T/collectd.log" |
    head -1 | sed -E 's/correlationId "([^"]+)".*/\1/'
}

# log_from N: collectd.log from line N on.
log_from() { tail -n "+$1" "$T/collectd.log"; }
# log_mark: the line number the next collectd.log line will have.
log_mark() { echo $(($(_bm_lines "$T/collectd.log") + 1)); }

# manual RELAY MESSAGE: a manual command for the plant's RELAY (the
# relay_command notification bimetri-ctl sends through unixsock).
manual() {
  bm_putnotif "severity=okay time=$(date +%s) host=testhost plugin=bimetri plugin_instance=plant1 type=relay_command type_instance=$1 message=\"$2\""
}

# val METRIC: the value of testhost/bimetri-plant1/METRIC.  Counters
# (operations-*, DERIVE) are read from the csv plugin's files, which hold
# what was dispatched, since GETVAL answers a DERIVE's rate; csv writes once
# per interval, so wait for a counter with wait_val.
val() {
  case $1 in
  operations-* | timestamp-*) bm_csv_last "testhost/bimetri-plant1/$1" ;;
  *) bm_getval "testhost/bimetri-plant1/$1" ;;
  esac
}

# val_is METRIC WANT: true when the metric currently has value WANT.
val_is() { [[ $(val "$1" 2>/dev/null) == "$2" ]]; }

# wait_val METRIC WANT [TIMEOUT_S]: waits until the metric has value WANT.
wait_val() { bm_wait_for "${3:-10}" val_is "$1" "$2"; }

# csv_first METRIC: the time of the first csv row of METRIC.
csv_first() {
  local f
  f=$(ls "$T"/csv/testhost/bimetri-plant1/"$1"-* 2>/dev/null | head -n 1)
  [[ -n $f ]] && awk -F, 'NR == 2 { printf "%.3f\n", $1; exit }' "$f"
}

# csv_gaps METRIC [FROM]: the gaps between the csv rows of METRIC (of the
# newest file), from its row FROM on (2, the first row, by default).
csv_gaps() {
  local f
  f=$(ls "$T"/csv/testhost/bimetri-plant1/"$1"-* 2>/dev/null | tail -n 1)
  [[ -n $f ]] && awk -F, -v from="${2:-2}" \
    'NR >= from { t = $1 + 0; if (p) print t - p; p = t }' "$f"
}

# gaps_within GAPS MIN MAX: true when GAPS (csv_gaps' lines) has any and
# all are from MIN to MAX.
gaps_within() {
  [[ -n $1 ]] && ! awk -v lo="$2" -v hi="$3" '$1 < lo || $1 > hi { bad = 1 } END { exit !bad }' <<<"$1"
}

# absent_from_cache ROUNDS METRIC...: GETVALs every 0.25 s for ROUNDS
# rounds; prints how many of them found a METRIC missing from the cache.
absent_from_cache() {
  local rounds=$1 gone=0 m i
  shift
  for ((i = 0; i < rounds; i++)); do
    for m in "$@"; do
      val "$m" >/dev/null 2>&1 || gone=$((gone + 1))
    done
    sleep 0.25
  done
  echo "$gone"
}

# count FILE REGEX: the number of lines of FILE matching REGEX (0 if none).
count() { grep -cE "$2" "$1" 2>/dev/null || true; }

# no_secret_leaked: fails when the token, or the shared secret, appears in
# any log, output, metric file or notification of this test.
no_secret_leaked() {
  local token secret
  token=$(<"$T/token")
  secret=$(<"$T/secret")
  ! grep -rqsF -e "$token" -e "$secret" --exclude=token --exclude=secret \
    --exclude='*.conf' --exclude='sub*.log' "$T"
}
