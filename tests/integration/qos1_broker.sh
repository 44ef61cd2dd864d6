#!/usr/bin/env bash
# Interoperability with a broker that grants QoS 1 at most and closes the
# connection of a client that publishes at QoS 2 (as Azure IoT Hub documents;
# AWS IoT Core supports QoS 0 and 1 only too): Aedes with
# tests/brokers/aedes-qos1.js, installed from the npm registry by this test
# (tests/brokers/package.json and package-lock.json, into
# $top_builddir/tests/brokers/node_modules).
#
# 1. The plugin at its default QoS 2 connects, subscribed at QoS 1 (its
#    SubscribeQoS default, granted). Its QoS 2 commands cannot be sent: each is
#    refused and the connection closed; the command times out, is retried
#    and given up. The plugin must say why, back off, and stop sending a
#    command it gave up.
# 2. With QoS 1 configured and a gateway that answers everything twice, a
#    Trigger switches the pump on and off: the relay is right, duplicates
#    are counted and ignored, no state rolls back, no extra command is sent.
# 3. The broker is killed and restarted on the same port (its in-memory
#    sessions are lost) between a command's commandResponse and its
#    notification: the command still ends in a known outcome.
BM_TEST_TIMEOUT=${BM_TEST_TIMEOUT:-240}
. "$top_srcdir/tests/integration/plant.sh"

BROKERS_SRC=$top_srcdir/tests/brokers
BROKERS_DIR=$top_builddir/tests/brokers
PLUGIN_CLIENT=collectd-testhost-plant1
NPM_TIMEOUT=150

# ---------------------------------------------------------------------------
# The Aedes broker
# ---------------------------------------------------------------------------

# node_ok: true when node is at least version 20 (Aedes 1.x) and npm runs.
node_ok() {
  command -v node && command -v npm &&
    node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'
}

# aedes_install: tests/brokers/ (Aedes pinned by its package-lock.json)
# installed into $BROKERS_DIR.
aedes_install() {
  BM_NPM_TIMEOUT=$NPM_TIMEOUT bm_npm_install "$BROKERS_SRC" "$BROKERS_DIR" aedes aedes-qos1.js
}

# aedes_start: starts the broker on 127.0.0.1:$BROKER_PORT (a free port when
# unset; kept when set, so a restarted broker has the same port), logging to
# $T/aedes.log. Sets BROKER_PID (so bm_stop_broker and bm_kill_broker stop
# it); returns once it logs that it listens and the port accepts. A port
# taken meanwhile is tried again (a new one when it was free to choose).
aedes_start() {
  local tries=0 fixed=${BROKER_PORT:-} before
  while ((tries++ < 4)); do
    [[ -n ${BROKER_PORT:-} ]] || BROKER_PORT=$(bm_free_port 1) || return 1
    before=$(_bm_lines "$T/aedes.log")
    node "$BROKERS_DIR/aedes-qos1.js" --port "$BROKER_PORT" --log "$T/aedes.log" \
      --exit-after "$(($(_bm_remaining) + 10))" >>"$T/aedes.out" 2>&1 &
    BROKER_PID=$!
    _bm_track "$BROKER_PID" aedes
    if bm_wait_for 10 aedes_listening "$before" >/dev/null; then
      return 0
    fi
    bm_stop_broker
    grep -q 'EADDRINUSE' "$T/aedes.log" "$T/aedes.out" 2>/dev/null || return 1
    bm_diag "port $BROKER_PORT is in use, trying again"
    if [[ -z $fixed ]]; then BROKER_PORT=; else sleep 1; fi
  done
  return 1
}

# aedes_listening LINE: true when the log has a "listening" line after LINE
# and the port accepts connections; false when the broker exited.
aedes_listening() {
  _bm_alive "$BROKER_PID" || return 2
  tail -n "+$(($1 + 1))" "$T/aedes.log" 2>/dev/null | grep -q '^[0-9.]* listening ' &&
    _bm_port_open "$BROKER_PORT"
}

# aedes_since LINE REGEX: how many lines of the broker's log after LINE
# match REGEX.
aedes_since() { tail -n "+$(($1 + 1))" "$T/aedes.log" | grep -cE -- "$2" || true; }

# aedes_since_at_least LINE REGEX N: true when aedes_since is N or more.
aedes_since_at_least() { (($(aedes_since "$1" "$2") >= $3)); }

# connects_within S: how many times the plugin connected within S seconds
# of the broker's first refusal of its publishes.
connects_within() {
  awk -v id="client=$PLUGIN_CLIENT" -v s="$1" '
    $2 == "refuse" && $3 == id && !first { first = $1 }
    $2 == "connect" && $3 == id { t[++n] = $1 }
    END { for (i = 1; i <= n; i++) if (first && t[i] >= first - 2 && t[i] < first + s) k++
          print k + 0 }' "$T/aedes.log"
}

# plugin_connects: how many times the plugin's client connected so far.
plugin_connects() { count "$T/aedes.log" " connect client=$PLUGIN_CLIENT "; }

# refusals: how many of the plugin's publishes the broker refused so far.
refusals() { count "$T/aedes.log" " refuse client=$PLUGIN_CLIENT "; }

# gwsim_start ARGS: bm_start_gwsim for this broker: the simulator against
# $BROKER_PORT, returning once Aedes logged its subscription to the command
# topic (bm_start_gwsim reads mosquitto's log).
gwsim_start() {
  local re=' subscribe client=[^ ]+ topic=resource/commands ' before
  before=$(bm_count_log "$T/aedes.log" "$re")
  "$GWSIM" -p "$BROKER_PORT" --log "$T/gwsim.log" \
    --exit-after "$(($(_bm_remaining) + 10))" "$@" >>"$T/gwsim.out" 2>&1 &
  GWSIM_PID=$!
  _bm_track "$GWSIM_PID" bimetri-gwsim
  bm_wait_log "$T/aedes.log" "$re" 10 $((before + 1)) ||
    bm_bail "bimetri-gwsim did not subscribe to resource/commands within 10s"
}

# at_least METRIC N: true when the counter METRIC is N or more.
at_least() {
  local v
  v=$(val "$1") || return 1
  [[ $v =~ ^[0-9]+$ ]] && ((v >= $2))
}

# states_seen: the successive distinct values of bool-pump in the csv files.
states_seen() {
  cat "$T"/csv/testhost/bimetri-plant1/bool-pump-* 2>/dev/null |
    awk -F, '$1 != "epoch" { printf "%d\n", $2 }' | uniq | tr '\n' ' '
}

# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------

node_ok >/dev/null 2>&1
bm_ok $? "node >= 20 and npm are installed (Aedes 1.x needs them)" ||
  bm_bail "install Node.js 20 or later with npm"
t0=$EPOCHSECONDS
aedes_install
bm_ok $? "Aedes is installed from tests/brokers/package-lock.json in $((EPOCHSECONDS - t0))s" ||
  { bm_diag "$(tail -n 20 "$T/npm.out")"; bm_bail "npm ci failed (see $T/npm.out)"; }
bm_is "$(node -p 'require(process.argv[1]).version' "$BROKERS_DIR/node_modules/aedes/package.json")" \
  1.2.0 "the pinned Aedes version is the one installed"

plant_token
aedes_start || bm_bail "Aedes did not start (see $T/aedes.log, $T/aedes.out)"
bm_diag "$(awk '/ listening /{print $5; exit}' "$T/aedes.log") on 127.0.0.1:$BROKER_PORT"
gwsim_start --secret-file "$T/secret" --qos 1 --duplicate --delay 200
bm_check "the broker grants the simulator's QoS 2 subscription QoS 1" \
  grep -qE ' subscribe client=[^ ]+ topic=resource/commands requested=2 granted=1$' "$T/aedes.log"

# ---------------------------------------------------------------------------
# 1. The default QoS 2
# ---------------------------------------------------------------------------
t1=$EPOCHSECONDS
bm_start_collectd "$(plant_conf 'AckTimeout 2
    CommandTimeout 3
    Retries 1
    RetryBackoff 1')"
bm_check "the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1
bm_check "the plugin logs the granted QoS 1" grep -qE \
  'subscribed to "application/third-party/flexyWattApp/1" \(granted QoS 1, session new\)' "$T/collectd.log"
bm_is "$(count "$T/collectd.log" 'below the requested')" 0 \
  "and no warning: QoS 1 is what it asked for the subscription"

bm_notify failure sensors temperature "" "too hot"
bm_check "the broker refuses the plugin's QoS 2 command and closes the connection" \
  bm_wait_log "$T/aedes.log" " refuse client=$PLUGIN_CLIENT topic=resource/commands qos=2 " 10
bm_check "the plugin sees the connection lost" \
  bm_wait_log "$T/collectd.log" 'connection to 127\.0\.0\.1:[0-9]+ lost' 10
bm_check "the command times out, is retried and given up (a FAILURE)" bm_wait_log "$T/collectd.log" \
  'Notification: severity = FAILURE, .*type = relay_result, type_instance = pump, message = relay "pump" not switched on: gave up after 2 attempts' 20
bm_is "$(count "$T/gwsim.log" '^cmd ')" 0 "no command reached the gateway"
bm_isnt "$(val bool-pump 2>/dev/null)" 1 "the relay is not reported on"
# The first reconnect after giving up shows whether the abandoned command
# is sent again (20 s at most: the backoff is 8 s by then).
from=$(_bm_lines "$T/aedes.log")
bm_wait_for 20 aedes_since_at_least "$from" " connect client=$PLUGIN_CLIENT " 1 >/dev/null || true
sleep 1
n=$(aedes_since "$from" " refuse client=$PLUGIN_CLIENT ")
bm_is "$n" 0 "after giving up, a reconnect does not send the abandoned QoS 2 command again"
n=$(connects_within 12)
((n <= 6))
bm_ok $? "reconnects back off while the broker keeps closing the connection ($n connections in the 12 s after the first refusal)"
bm_check "the log says the broker closed the connection on a QoS 2 publish: set QoS 1" \
  grep -qE 'closed the connection right after a QoS 2 publication twice, .* takes QoS 1 at most .* set "QoS 1" in the Gateway block' "$T/collectd.log"
bm_diag "part 1: $((EPOCHSECONDS - t1))s, $(refusals) QoS 2 publishes refused, $(plugin_connects) connections"
bm_stop_collectd
bm_ok $? "collectd stops cleanly"

# ---------------------------------------------------------------------------
# 2. QoS 1: duplicates are normal
# ---------------------------------------------------------------------------
t2=$EPOCHSECONDS
warned=$(count "$T/collectd.log" 'below the requested')
connects=$(plugin_connects)
bm_start_collectd "$(plant_conf 'QoS 1
    AckTimeout 3
    CommandTimeout 4
    Retries 1
    RetryBackoff 1')"
bm_check "with QoS 1 the plugin is connected and subscribed" bm_wait_for 10 val_is current_connections 1
bm_check "it logs the granted QoS 1 (its session kept by the broker)" grep -qE \
  'subscribed to "application/third-party/flexyWattApp/1" \(granted QoS 1, session resumed\)' "$T/collectd.log"
bm_is "$(count "$T/collectd.log" 'below the requested')" "$warned" "and warns no more: QoS 1 is what it asked"

bm_notify failure sensors temperature "" "too hot"
bm_check "the Trigger switches the pump on through duplicated answers" wait_val bool-pump 1 10
bm_check "the duplicated response and notification are counted" bm_wait_for 5 at_least operations-duplicate 2
bm_notify okay sensors temperature "" "cool"
bm_check "the OKAY switches the pump off" wait_val bool-pump 0 10
bm_check "operations-duplicate > 0 (every answer came twice: 4 at least)" bm_wait_for 5 at_least operations-duplicate 4
bm_check "two confirmations" wait_val operations-confirmed 2 5
sleep 3 # late duplicates, if any, arrive now
bm_is "$(val bool-pump)" 0 "the pump is still off: no duplicate rolled it back"
bm_is "$(states_seen)" "1 0 " "bool-pump went on, then off, and never back"
bm_is "$(count "$T/collectd.log" 'type = relay_on, ')" 1 "one relay_on notification"
bm_is "$(count "$T/collectd.log" 'type = relay_off, ')" 1 "one relay_off notification"
bm_is "$(count "$T/gwsim.log" '^cmd ')" 2 "the gateway received two commands, no extra one"
bm_is "$(count "$T/aedes.log" " publish client=$PLUGIN_CLIENT topic=resource/commands qos=1 ")" 2 \
  "the plugin published two commands, at QoS 1"
bm_is "$(val operations-published)" 2 "operations-published is 2"
bm_is "$(val operations-timeout)" 0 "nothing timed out"
bm_is "$(plugin_connects)" $((connects + 1)) "the connection stayed up"
bm_diag "part 2: $((EPOCHSECONDS - t2))s, operations-duplicate $(val operations-duplicate)"

# ---------------------------------------------------------------------------
# 3. The broker restarts in the middle of a command
# ---------------------------------------------------------------------------

# restart_mid_command SEVERITY WANT DOWN_S: a notification of SEVERITY asks
# for the pump WANT; once the command is acknowledged, before its
# notification (due 3 s after it), the broker is killed, left down DOWN_S
# seconds and started again on the same port, without the sessions. The
# command must end in a known outcome and the pump must end WANT.
restart_mid_command() {
  local sev=$1 want=$2 down=$3 word=off cmds published lost fresh corr outcome n
  ((want)) && word=on
  cmds=$(count "$T/gwsim.log" '^cmd ')
  published=$(count "$T/collectd.log" 'published setExtDO relay "pump"')
  lost=$(count "$T/collectd.log" 'connection to 127\.0\.0\.1:[0-9]+ lost')
  fresh=$(count "$T/collectd.log" '\(granted QoS 1, session new\)')
  bm_notify "$sev" sensors temperature "" "$sev again"
  bm_check "[down ${down}s] the command is published" \
    bm_wait_log "$T/collectd.log" 'published setExtDO relay "pump"' 10 $((published + 1))
  corr=$(grep -oE "published setExtDO relay \"pump\" .* status $want, correlationId \"[^\"]+\"" \
    "$T/collectd.log" | tail -n 1 | sed -E 's/.*correlationId "([^"]+)"/\1/')
  bm_check "[down ${down}s] the command $corr is acknowledged" \
    bm_wait_log "$T/collectd.log" "received commandResponse correlationId \"$corr\" result sent" 10
  bm_kill_broker
  sleep "$down"
  aedes_start || bm_bail "Aedes did not restart on port $BROKER_PORT"
  bm_check "[down ${down}s] the plugin noticed the lost connection" \
    bm_wait_log "$T/collectd.log" 'connection to 127\.0\.0\.1:[0-9]+ lost' 10 $((lost + 1))
  bm_check "[down ${down}s] it reconnects to the restarted broker: session new, granted QoS 1" \
    bm_wait_log "$T/collectd.log" '\(granted QoS 1, session new\)' 20 $((fresh + 1))
  bm_check "[down ${down}s] the pump ends $word" wait_val bool-pump "$want" 25
  outcome=$(grep -E "correlationId \"$corr\"" "$T/collectd.log" |
    grep -oE "is $word \(was [a-z]+\)|ended: [^\"]*" | head -n 1)
  bm_like "$outcome" "^(is $word \(was [a-z]+\)|ended: no notification within [0-9]+ s)" \
    "[down ${down}s] the command in flight ended in a known outcome: confirmed, or timed out ($outcome)"
  bm_check "[down ${down}s] nothing is pending" wait_val pending_operations-pump 0 5
  n=$(($(count "$T/gwsim.log" '^cmd ') - cmds))
  ((n >= 1 && n <= 2))
  bm_ok $? "[down ${down}s] the gateway got the command, and at most one retry ($n)"
  sleep 2
  bm_is "$(($(count "$T/gwsim.log" '^cmd ') - cmds))" "$n" "[down ${down}s] no command after the confirmation"
  bm_diag "broker down ${down}s: command $corr: $outcome; $n command(s) at the gateway"
}

t3=$EPOCHSECONDS
bm_stop_gwsim
gwsim_start --secret-file "$T/secret" --qos 1 --duplicate --delay 3000
# Back at once: the plugin is usually subscribed again before the
# simulator publishes the notification.
restart_mid_command failure 1 0.5
# Down longer than CommandTimeout: the command times out meanwhile and is
# retried with a new correlationId once the broker is back.
restart_mid_command okay 0 5
bm_check "collectd is still running" kill -0 "$COLLECTD_PID"
bm_check "the token appears in no log, output or metric" no_secret_leaked
bm_diag "part 3: $((EPOCHSECONDS - t3))s"
bm_done
