#!/usr/bin/env bash
# The example configurations users copy, contrib/collectd.conf.d/bimetri.conf
# and contrib/thresholds.conf: the example names every option of
# collectd-bimetri(5); collectd runs it as it stands, with every commented
# option switched on, and with each alternative token source; and together
# the two switch the pump the way thresholds.conf's table says.
#
# collectd -t would be the obvious check, but Debian 12's collectd 5.12
# exits 0 from -t without reading the file (collectd issue #3216): a check
# that cannot fail. These tests start collectd on the configuration instead.
. "$top_srcdir/tests/integration/plant.sh"
. "$top_srcdir/tests/integration/example_conf.sh"

EXAMPLE=$top_srcdir/contrib/collectd.conf.d/bimetri.conf
THRESHOLDS=$top_srcdir/contrib/thresholds.conf
MAN=$top_srcdir/docs/collectd-bimetri.5

# ---- Every documented option is in the example ---------------------------

# The option names of the man page: the first word of the .B/.BI lines from
# GATEWAY OPTIONS up to METRICS that starts with a capital or "<".
documented=$(sed -n '/^\.SH GATEWAY OPTIONS/,/^\.SH METRICS/p' "$MAN" |
  awk '/^\.BI? / && $2 ~ /^(<?[A-Z][A-Za-z]*>?)$/ && $2 != "Required." { print $2 }' |
  sort -u)
missing=
for opt in $documented; do
  re=${opt%>}
  grep -qE "^ *(# *)*$re( |>|\$)" "$EXAMPLE" || missing+=" $opt"
done
bm_ok "$((${#documented} > 0 ? 0 : 1))" "the man page lists options"
bm_is "${missing# }" "" "the example names every option of collectd-bimetri(5)"

# ---- collectd runs the example --------------------------------------------

plant_token
example_files || bm_bail "cannot create the example's files in $T/etc"
bm_start_broker

# runs NAME CONFIG: collectd starts on CONFIG with the plugin configured
# (its metrics are there) and without a configuration error.
runs() {
  local st=0
  : >"$T/collectd.log"
  bm_try_start_collectd "$2" || st=$?
  if ((st == 0)); then
    bm_wait_for 10 bm_getval testhost/bimetri-plant1/current_connections >/dev/null || st=1
  fi
  bm_ok "$st" "$1" || bm_diag "$(grep -i 'bimetri\|error' "$T/collectd.log" | tail -n 10)"
  bm_stop_collectd
}

asis=$(example_conf "$EXAMPLE")
thresholds=$(example_conf "$THRESHOLDS")
bm_unlike "$(sed 's/#.*//' <<<"$asis")" "/etc/collectd|/var/lib/collectd|localhost" \
  "the test adapts every site path and the broker"

# A negative control: this way of checking does see a bad configuration.
: >"$T/collectd.log"
if bm_try_start_collectd "$(sed 's/OnFailure 1/OnFailure 7/' <<<"$asis")" >/dev/null 2>&1; then
  bm_fail "a broken copy of the example is refused"
  bm_stop_collectd
else
  bm_like "$(cat "$T/collectd.log")" 'option "OnFailure": expects an integer from 0 to 1' \
    "a broken copy of the example is refused, naming the option"
fi

runs "the example runs as it stands, with thresholds.conf" "$asis
$thresholds"

all=$(example_uncomment <<<"$asis")
runs "every commented option on (TokenFile, PasswordFile, TLS, Switch, Interlock)" \
  "$(example_drop TokenCommand '<Token>' Password CertificateKeyPassword <<<"$all")"
runs "the alternatives on (<Token> ES256, Password, CertificateKeyPassword, a heater Switch)" \
  "$(example_drop TokenFile TokenCommand PasswordFile CertificateKeyPasswordFile \
    OnAbove OffBelow <<<"$all" | sed -E 's/^( *)# *#(OnBelow|OffAbove) /\1\2 /')"
runs "TokenCommand instead of TokenFile" \
  "$(example_drop TokenFile '<Token>' Password CertificateKeyPassword <<<"$all" |
    sed "s|\"/usr/local/bin/plant1-token\"|\"cat $T/token\"|")"

# ---- The threshold plugin drives the pump as thresholds.conf says ----------

bm_sub_start resource/commands 2
CMD_LOG=$SUB_LOG
bm_start_gwsim --secret-file "$T/secret" --delay 100
bm_start_collectd "$asis
$thresholds"
bm_check "the plugin is connected" bm_wait_for 10 val_is current_connections 1

# temp VALUE: one temperature reading, as the sensors plugin would report it.
temp() {
  bm_unixsock "PUTVAL \"testhost/sensors/temperature\" interval=1 N:$1" >/dev/null
  sleep 1.1
}
temp 60
temp 75
bm_check "above WarningMax: a WARNING" \
  bm_wait_log "$T/collectd.log" 'severity = WARNING, host = testhost, plugin = sensors' 5
bm_is "$(count "$CMD_LOG" setExtDO)" 0 "the WARNING switches nothing"
temp 85
bm_check "above FailureMax the pump goes on" wait_val bool-pump 1 10
temp 79.5
temp 75
bm_check "back to WARNING" \
  bm_wait_log "$T/collectd.log" 'severity = WARNING, host = testhost, plugin = sensors' 5 2
bm_is "$(val bool-pump)" 1 "the pump stays on in the WARNING band"
temp 69.5
bm_is "$(val bool-pump)" 1 "and above WarningMax - Hysteresis"
temp 65
bm_check "back in range (OKAY) the pump goes off" wait_val bool-pump 0 10
bm_is "$(count "$CMD_LOG" setExtDO)" 2 "two commands in all"
bm_check "the token appears in no log, output or metric" no_secret_leaked
bm_done
