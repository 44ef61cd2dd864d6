#!/usr/bin/env bash
# The Grafana pipeline through InfluxDB 1.x, for real: the simulator,
# collectd with the plugin and the stock network plugin, and an InfluxDB
# server whose collectd input receives it, all on loopback. A Trigger
# switches the pump; InfluxQL sees the new state. Then every query of
# contrib/grafana/bimetri-influxdb.json (panels and template variables, the
# variables replaced by this plant's values) must return data.
BM_TEST_TIMEOUT=${BM_TEST_TIMEOUT:-90}
. "$top_srcdir/tests/integration/plant.sh"

DASHBOARD=$top_srcdir/contrib/grafana/bimetri-influxdb.json

for tool in influxd curl jq; do
  command -v "$tool" >/dev/null ||
    bm_bail "$tool is not installed (tests/deps.sh installs it)"
done
BM_STOCK_PLUGINS+=" network"

{ read -r HTTP_PORT; read -r RPC_PORT; read -r UDP_PORT; } < <(bm_free_port 3)
[[ -n $UDP_PORT ]] || bm_bail "no free ports on 127.0.0.1"
INFLUX=http://127.0.0.1:$HTTP_PORT

# influx_query QUERY: runs QUERY on database collectd; prints the JSON reply,
# fails on an HTTP error or an error in the reply.
influx_query() {
  curl -sSf --max-time 5 -G "$INFLUX/query" --data-urlencode db=collectd \
    --data-urlencode "q=$1" | jq -ce 'select(all(.results[]; has("error") | not))'
}

# influx_has_data QUERY: true when QUERY returns at least one series.
influx_has_data() {
  influx_query "$1" | jq -e '[.results[].series // [] | length] | add > 0' >/dev/null
}

# influx_last QUERY: the last value of the single series QUERY returns.
influx_last() {
  influx_query "$1" | jq -re '.results[0].series | if length == 1 then .[0].values[-1][1] else error("\(length) series") end'
}
influx_last_is() { [[ $(influx_last "$1") == "$2" ]]; }

# dash_subst QUERY: QUERY with Grafana's variables replaced: the time filter
# (last 5 minutes), the interval, and this plant's host, gateway and relay.
dash_subst() {
  local e=$1 v
  e=${e//'$timeFilter'/time > now() - 5m}
  for v in __interval:2s host:"$BM_HOSTNAME" gateway:plant1 relay:pump; do
    e=${e//"\${${v%%:*}}"/${v#*:}}
    e=${e//"\$${v%%:*}"/${v#*:}}
  done
  [[ $e != *'$'[a-z_]* ]] || return 1
  printf '%s\n' "$e"
}

# first_child PID: prints the PID of a child of PID; fails when it has none.
first_child() {
  local c
  c=$(_bm_children "$1" | head -n 1)
  [[ -n $c ]] && echo "$c"
}

# start_influxdb: InfluxDB with its HTTP API on 127.0.0.1:$HTTP_PORT and its
# collectd input on 127.0.0.1:$UDP_PORT (database "collectd", collectd's
# types.db), its files in $T; returns once it answers /ping.
start_influxdb() {
  local pid child
  cat >"$T/influxdb.conf" <<EOF
reporting-disabled = true
bind-address = "127.0.0.1:$RPC_PORT"
[meta]
  dir = "$T/influxdb/meta"
[data]
  dir = "$T/influxdb/data"
  wal-dir = "$T/influxdb/wal"
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:$HTTP_PORT"
  log-enabled = false
[[collectd]]
  enabled = true
  bind-address = "127.0.0.1:$UDP_PORT"
  database = "collectd"
  typesdb = "$BM_TYPES_DB"
  batch-timeout = "1s"
EOF
  timeout -k 5 "$(($(_bm_remaining) + 10))" influxd run -config "$T/influxdb.conf" \
    >"$T/influxdb.log" 2>&1 &
  pid=$!
  _bm_track "$pid" "timeout influxd"
  child=$(bm_wait_for 5 first_child "$pid") && _bm_track "$child" influxd
  bm_wait_for 30 curl -sSf --max-time 2 "$INFLUX/ping" >/dev/null ||
    bm_bail "influxd did not answer on $INFLUX within 30s (see $T/influxdb.log)"
}

start_influxdb
plant_token
bm_start_broker
bm_start_gwsim --secret-file "$T/secret" --delay 300
bm_start_collectd "$(plant_conf)
LoadPlugin network
<Plugin network>
  Server \"127.0.0.1\" \"$UDP_PORT\"
</Plugin>"
bm_check "connected and subscribed: current_connections is 1" \
  bm_wait_for 10 val_is current_connections 1
bm_check "InfluxQL: current_connections is 1 in bimetri_value" \
  bm_wait_for 15 influx_last_is "SELECT last(\"value\") FROM \"bimetri_value\" WHERE \"host\" = 'testhost' AND \"instance\" = 'plant1' AND \"type\" = 'current_connections'" 1
bm_is "$(influx_query 'SHOW TAG KEYS FROM "bimetri_value"' | jq -c '[.results[0].series[0].values[][0]]')" \
  '["host","instance","type","type_instance"]' "bimetri_value is tagged host, instance, type, type_instance"

bm_notify failure sensors temperature "" "too hot"
bm_check "collectd has bool-pump 1 after the confirmation" wait_val bool-pump 1 10
bm_check "InfluxQL: the pump is on" \
  bm_wait_for 10 influx_last_is "SELECT last(\"value\") FROM \"bimetri_value\" WHERE \"host\" = 'testhost' AND \"instance\" = 'plant1' AND \"type\" = 'bool' AND \"type_instance\" = 'pump'" 1
bm_check "InfluxQL: operations confirmed is stored as its count, 1" \
  bm_wait_for 10 influx_last_is "SELECT last(\"value\") FROM \"bimetri_value\" WHERE \"host\" = 'testhost' AND \"instance\" = 'plant1' AND \"type\" = 'operations' AND \"type_instance\" = 'confirmed'" 1
bm_notify okay sensors temperature "" "cool again"
bm_check "InfluxQL: the pump is off after the OKAY" \
  bm_wait_for 10 influx_last_is "SELECT last(\"value\") FROM \"bimetri_value\" WHERE \"host\" = 'testhost' AND \"instance\" = 'plant1' AND \"type\" = 'bool' AND \"type_instance\" = 'pump'" 0

bm_check "the dashboard is valid JSON with a DS_INFLUXDB input" \
  jq -e '.__inputs[0].name == "DS_INFLUXDB" and .__inputs[0].pluginId == "influxdb"' "$DASHBOARD"
n_q=$(jq '[.. | objects | select(has("rawQuery"))] | length' "$DASHBOARD")
mapfile -t targets < <(jq -r '.panels[] | (if .type == "row" then .panels[] else . end)
  | .title as $t | .targets[]? | select(has("rawQuery")) | [$t, .query] | @tsv' "$DASHBOARD")
bm_ok "$( ((n_q >= 8 && ${#targets[@]} == n_q)); echo $?)" \
  "every query of the dashboard is a panel target (${#targets[@]} of $n_q)"
for line in "${targets[@]}"; do
  IFS=$'\t' read -r title query <<<"$line"
  if ! q=$(dash_subst "$query"); then
    bm_fail "panel \"$title\": a variable is left in: $query"
    continue
  fi
  bm_check "panel \"$title\" returns data" bm_wait_for 15 influx_has_data "$q"
done

declare -A want_values=([host]=testhost [gateway]=plant1 [relay]="fan pump")
n_vars=0
while IFS=$'\t' read -r name query; do
  n_vars=$((n_vars + 1))
  q=${query//'$host'/.*}
  q=${q//'$gateway'/.*}
  bm_is "$(influx_query "$q" | jq -r '[.results[0].series[0].values[][1]] | sort | join(" ")')" \
    "${want_values[$name]:-?}" "variable \$$name lists ${want_values[$name]:-?}"
done < <(jq -r '.templating.list[] | select(.type == "query") | [.name, .query] | @tsv' "$DASHBOARD")
bm_is "$n_vars" 3 "the dashboard has the host, gateway and relay variables"

bm_stop_collectd
bm_is $? 0 "collectd shuts down cleanly with network loaded"
bm_done
