#!/usr/bin/env bash
# The Grafana pipeline through Prometheus, for real: the simulator, collectd
# with the plugin and the stock write_prometheus plugin, and a Prometheus
# server scraping it every second, all on loopback. A Trigger switches the
# pump; PromQL through Prometheus's HTTP API sees the new state. Then every
# query of contrib/grafana/bimetri-prometheus.json (panels and template
# variables, the variables replaced by this plant's values) must return data.
BM_TEST_TIMEOUT=${BM_TEST_TIMEOUT:-90}
. "$top_srcdir/tests/integration/plant.sh"

DASHBOARD=$top_srcdir/contrib/grafana/bimetri-prometheus.json

# Missing tools are installed by tests/deps.sh; a test that skips would hide
# them.
for tool in prometheus curl jq; do
  command -v "$tool" >/dev/null ||
    bm_bail "$tool is not installed (tests/deps.sh installs it)"
done
[[ -f $BM_COLLECTD_PLUGINS_DIR/write_prometheus.so ]] ||
  bm_bail "$BM_COLLECTD_PLUGINS_DIR/write_prometheus.so is missing (install collectd-core)"
if missing=$(ldd "$BM_COLLECTD_PLUGINS_DIR/write_prometheus.so" | grep 'not found'); then
  bm_bail "write_prometheus.so cannot load (install libmicrohttpd12 libprotobuf-c1): $missing"
fi
BM_STOCK_PLUGINS+=" write_prometheus"

{ read -r WP_PORT; read -r PROM_PORT; } < <(bm_free_port 2)
[[ -n $PROM_PORT ]] || bm_bail "no free TCP ports on 127.0.0.1"
PROM=http://127.0.0.1:$PROM_PORT

# ---------------------------------------------------------------------------
# Prometheus helpers
# ---------------------------------------------------------------------------

# prom_get PATH [CURL_ARGS...]: GET $PROM/PATH (query parameters url-encoded
# from --data-urlencode arguments); prints the body, fails on an HTTP error.
prom_get() {
  local path=$1
  shift
  curl -sSf --max-time 5 -G "$PROM$path" "$@"
}

# prom_result EXPR: prints the JSON result array of an instant query.
prom_result() {
  prom_get /api/v1/query --data-urlencode "query=$1" |
    jq -ce 'select(.status == "success") | .data.result'
}

# prom_value EXPR: prints the value of the single series an instant query
# returns; fails when it returns no series or several.
prom_value() {
  prom_result "$1" | jq -re 'if length == 1 then .[0].value[1] else error("\(length) series") end'
}

# prom_value_is EXPR WANT: true when EXPR's single value is WANT.
prom_value_is() { [[ $(prom_value "$1") == "$2" ]]; }

# prom_has_data instant|range EXPR: true when the query succeeds with at
# least one series (a range query covers the last 2 minutes, as a panel
# would); prints how many.
prom_has_data() {
  local now=$EPOCHSECONDS
  if [[ $1 == instant ]]; then
    prom_get /api/v1/query --data-urlencode "query=$2"
  else
    prom_get /api/v1/query_range --data-urlencode "query=$2" \
      --data-urlencode "start=$((now - 120))" --data-urlencode "end=$now" \
      --data-urlencode step=2
  fi | jq -e '.status == "success" and (.data.result | length) > 0' >/dev/null
}

# dash_subst EXPR: EXPR with Grafana's variables replaced by this plant's
# values: the collectd host, the gateway, the relay, and fixed windows for
# $__range and $__rate_interval. Fails when a variable is left.
dash_subst() {
  local e=$1 v
  for v in __rate_interval:1m __range:5m __interval:2s \
    instance:"$BM_HOSTNAME" gateway:plant1 relay:pump; do
    e=${e//"\${${v%%:*}}"/${v#*:}}
    e=${e//"\$${v%%:*}"/${v#*:}}
  done
  [[ $e != *'$'* ]] || return 1
  printf '%s\n' "$e"
}

# label_values SELECTOR LABEL: the values of LABEL among the series matching
# SELECTOR in the last 5 minutes, sorted, space-separated, as Grafana's
# label_values(SELECTOR, LABEL) variable query gets them.
label_values() {
  prom_get "/api/v1/label/$2/values" --data-urlencode "match[]=$1" \
    --data-urlencode "start=$((EPOCHSECONDS - 300))" --data-urlencode "end=$EPOCHSECONDS" |
    jq -re 'select(.status == "success") | .data | sort | join(" ")'
}

# first_child PID: prints the PID of a child of PID; fails when it has none.
first_child() {
  local c
  c=$(_bm_children "$1" | head -n 1)
  [[ -n $c ]] && echo "$c"
}

# metrics_have FAMILY TYPE: true when write_prometheus's /metrics has a
# family collectd_bimetri_FAMILY of TYPE with a series of gateway plant1
# from host testhost (keeps the page in $T/metrics.txt).
metrics_have() {
  curl -sSf --max-time 5 "http://127.0.0.1:$WP_PORT/metrics" >"$T/metrics.txt" &&
    grep -qx "# TYPE collectd_bimetri_$1 $2" "$T/metrics.txt" &&
    grep -q "^collectd_bimetri_$1{bimetri=\"plant1\",.*instance=\"$BM_HOSTNAME\"} " "$T/metrics.txt"
}

# start_prometheus: a Prometheus server on 127.0.0.1:$PROM_PORT scraping
# collectd's write_prometheus every second, its database in $T. honor_labels
# keeps write_prometheus's "instance" label (collectd's Hostname) instead of
# renaming it exported_instance. Its lifetime is bounded by timeout(1) on top
# of the harness's cleanup. Returns once it is ready; its first scrape comes
# about 5 s later (target discovery is throttled to one update per 5 s).
start_prometheus() {
  local pid child
  cat >"$T/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: collectd
    honor_labels: true
    static_configs:
      - targets: ["127.0.0.1:$WP_PORT"]
EOF
  timeout -k 5 "$(($(_bm_remaining) + 10))" prometheus \
    --config.file="$T/prometheus.yml" --storage.tsdb.path="$T/prometheus" \
    --storage.tsdb.retention.time=1h --web.listen-address="127.0.0.1:$PROM_PORT" \
    >"$T/prometheus.log" 2>&1 &
  pid=$!
  _bm_track "$pid" "timeout prometheus"
  child=$(bm_wait_for 5 first_child "$pid") &&
    _bm_track "$child" prometheus
  bm_wait_for 30 prom_get /-/ready >/dev/null ||
    bm_bail "prometheus did not become ready on $PROM within 30s (see $T/prometheus.log)"
}

# ---------------------------------------------------------------------------
# The chain
# ---------------------------------------------------------------------------

plant_token
bm_start_broker
bm_start_gwsim --secret-file "$T/secret" --delay 300
bm_start_collectd "$(plant_conf)
LoadPlugin write_prometheus
<Plugin write_prometheus>
  Host \"127.0.0.1\"
  Port \"$WP_PORT\"
</Plugin>"
bm_check "connected and subscribed: current_connections is 1" \
  bm_wait_for 10 val_is current_connections 1

bm_check "write_prometheus serves the plugin's metrics on 127.0.0.1:$WP_PORT" \
  bm_wait_for 10 metrics_have current_connections gauge

start_prometheus
bm_check "prometheus scrapes collectd: current_connections is 1 in PromQL" \
  bm_wait_for 20 prom_value_is \
  'collectd_bimetri_current_connections{instance="testhost",bimetri="plant1",job="collectd"}' 1
bm_is "$(prom_result 'collectd_bimetri_bool{bimetri="plant1",type="pump"}')" "[]" \
  "no state is in Prometheus before the gateway said anything"
bm_check "all 16 outcome counters are in Prometheus" \
  bm_wait_for 5 prom_value_is 'count(collectd_bimetri_operations_total{instance="testhost",bimetri="plant1"})' 16

# FAILURE of the temperature: the Trigger switches the pump on.
bm_notify failure sensors temperature "" "too hot"
bm_check "collectd has bool-pump 1 after the confirmation" wait_val bool-pump 1 10

# The names the dashboard relies on, as collectd 5.12's write_prometheus
# makes them: collectd_<plugin>_<type>, with _total for a DERIVE.
for family in bool:gauge pending_operations:gauge current_connections:gauge \
  operations_total:counter response_time:gauge timestamp:gauge; do
  bm_check "write_prometheus exports collectd_bimetri_${family%%:*} as a ${family#*:}" \
    bm_wait_for 5 metrics_have "${family%%:*}" "${family#*:}"
done
bm_check "PromQL through Prometheus's HTTP API: the pump is on" \
  bm_wait_for 10 prom_value_is 'collectd_bimetri_bool{instance="testhost",bimetri="plant1",type="pump"}' 1
bm_check "PromQL: operations_total{type=\"confirmed\"} is 1" \
  bm_wait_for 10 prom_value_is 'collectd_bimetri_operations_total{instance="testhost",bimetri="plant1",type="confirmed"}' 1
bm_check "PromQL: the confirmation latency is a positive number of seconds" \
  bm_wait_for 10 prom_value_is \
  'count(collectd_bimetri_response_time{instance="testhost",bimetri="plant1",type="confirm"} > 0)' 1
expiry=$(prom_value 'collectd_bimetri_timestamp{instance="testhost",bimetri="plant1",type="token_expiry"} - time()')
bm_like "${expiry%.*}" '^(86[0-3][0-9][0-9]|86400)$' \
  "PromQL: the token expires in about a day, as plant_token made it (${expiry:-nothing} s)"

# OKAY: the pump goes off again, and Prometheus follows.
bm_notify okay sensors temperature "" "cool again"
bm_check "PromQL: the pump is off after the OKAY" \
  bm_wait_for 10 prom_value_is 'collectd_bimetri_bool{instance="testhost",bimetri="plant1",type="pump"}' 0

# ---------------------------------------------------------------------------
# Every query of the dashboard
# ---------------------------------------------------------------------------

bm_check "the dashboard is valid JSON with a DS_PROMETHEUS input" \
  jq -e '.__inputs[0].name == "DS_PROMETHEUS" and .__inputs[0].pluginId == "prometheus"' "$DASHBOARD"
n_expr=$(jq '[.. | objects | select(has("expr"))] | length' "$DASHBOARD")
mapfile -t targets < <(jq -r '.panels[] | (if .type == "row" then .panels[] else . end)
  | .title as $t | .targets[]? | select(has("expr"))
  | [$t, (if .instant then "instant" else "range" end), .expr] | @tsv' "$DASHBOARD")
bm_ok "$( ((n_expr >= 8 && ${#targets[@]} == n_expr)); echo $?)" \
  "every expr of the dashboard is a panel target (${#targets[@]} of $n_expr)"
for line in "${targets[@]}"; do
  IFS=$'\t' read -r title kind expr <<<"$line"
  if ! q=$(dash_subst "$expr"); then
    bm_fail "panel \"$title\": a variable is left in: $expr"
    continue
  fi
  bm_check "panel \"$title\" ($kind) returns data" bm_wait_for 15 prom_has_data "$kind" "$q"
done

declare -A want_values=([instance]=testhost [gateway]=plant1 [relay]="fan pump")
n_vars=0
while IFS=$'\t' read -r name query; do
  n_vars=$((n_vars + 1))
  if ! [[ $query =~ ^label_values\((.+),\ *([a-zA-Z_]+)\)$ ]]; then
    bm_fail "variable \$$name: not a label_values(selector, label) query: $query"
    continue
  fi
  label=${BASH_REMATCH[2]}
  # The other variables set to "All", as on a freshly imported dashboard.
  sel=${BASH_REMATCH[1]//'$instance'/.*}
  sel=${sel//'$gateway'/.*}
  bm_is "$(label_values "$sel" "$label")" "${want_values[$name]:-?}" \
    "variable \$$name lists ${want_values[$name]:-?}"
done < <(jq -r '.templating.list[] | select(.type == "query")
  | [.name, (.query | if type == "object" then .query else . end)] | @tsv' "$DASHBOARD")
bm_is "$n_vars" 3 "the dashboard has the instance, gateway and relay variables"

bm_stop_collectd
bm_is $? 0 "collectd shuts down cleanly with write_prometheus loaded"
bm_done
