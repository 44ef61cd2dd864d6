#!/usr/bin/env bash
# Every configuration mistake is a clear error naming the block and the
# option, and the plugin does not start.
. "$top_srcdir/tests/integration/plant.sh"

plant_token
BROKER_PORT=1 # never connected to: every configuration here is refused

# refused NAME EXPECTED_LOG_REGEX CONFIG: collectd must not run the plugin
# with CONFIG, and its log must match the regex.
refused() {
  local name=$1 want=$2 conf=$3 log
  : >"$T/collectd.log"
  if bm_try_start_collectd "$conf" >/dev/null 2>&1; then
    bm_stop_collectd >/dev/null 2>&1
    started=1
  else
    started=0
  fi
  log=$(cat "$T/collectd.log" "$T/collectd.out" 2>/dev/null)
  if grep -qE "$want" <<<"$log" && ! grep -q 'connected to' <<<"$log"; then
    bm_pass "$name"
  else
    bm_fail "$name"
    bm_diag "wanted: $want"
    bm_diag "log: $(grep -i bimetri <<<"$log" | tail -5)"
  fi
}

good=$(plant_conf)
sub() { sed "s|$1|$2|" <<<"$good"; }

refused "an unknown Gateway option" \
  '<Gateway "plant1">, option "Colour": unknown option' "$(sub '    UserId 12345' '    Colour "red"\n    UserId 12345')"
refused "a missing AppName" \
  '<Gateway "plant1">: option "AppName" is required' "$(sub '    AppName "flexyWattApp"' '')"
refused "a missing TokenFile" \
  'option "TokenFile" is required' "$(sub "    TokenFile \"$T/token\"" '')"
refused "an unreadable TokenFile" \
  "<Gateway \"plant1\">: cannot stat TokenFile \"$T/nonexistent\"" "$(sub "$T/token" "$T/nonexistent")"
refused "an AppName with a slash" \
  'option "AppName": "flexy/WattApp" must be non-empty without' "$(sub 'AppName "flexyWattApp"' 'AppName "flexy/WattApp"')"
refused "an AppName with a dot" \
  'option "AppName": "flexy.WattApp" must be' "$(sub 'AppName "flexyWattApp"' 'AppName "flexy.WattApp"')"
refused "an InstanceId with white space" \
  'option "InstanceId": "1 2" must be' "$(sub 'InstanceId "1"' 'InstanceId "1 2"')"
refused "an InstanceId with a wildcard" \
  'option "InstanceId": "#" must be' "$(sub 'InstanceId "1"' 'InstanceId "#"')"
refused "a relay name that is no valid instance" \
  '<Relay "pump/1">: invalid name' "$(sub '<Relay "pump">' '<Relay "pump/1">')"
refused "a duplicate relay name" \
  'Relay "pump" is defined twice' "$(sub '<Relay "fan">' '<Relay "pump">')"
refused "two relays on one output" \
  'Relays "pump" and "fan" both address ResourceId 101 Output 4' "$(sub 'ResourceId 102' 'ResourceId 101' | sed 's/Output 1$/Output 4/')"
refused "a relay without ResourceId" \
  '<Relay "fan">: option "ResourceId" is required' "$(sub '      ResourceId 102' '')"
refused "a string where a number belongs" \
  'option "UserId": expects exactly one number argument' "$(sub 'UserId 12345' 'UserId "12345"')"
refused "a QoS out of range" \
  'option "QoS": expects an integer from 0 to 2, got 3' "$(sub 'UserId 12345' 'UserId 12345\n    QoS 3')"
refused "a port out of range" \
  'option "Port": expects an integer from 1 to 65535' "$(sub "Port $BROKER_PORT" 'Port 70000')"
refused "a duplicate Gateway" \
  'a Gateway of this name already exists' "$(sed 's|<Trigger "overheat">|<Gateway "plant1">\n AppName "a"\n </Gateway>\n<Trigger "overheat">|' <<<"$good")"
refused "a Trigger on an unknown relay" \
  'Trigger "overheat">, option "Relay": Gateway "plant1" has no Relay "boiler"' "$(sub 'Relay "plant1" "pump"' 'Relay "plant1" "boiler"')"
refused "a Trigger on an unknown gateway" \
  'option "Relay": no Gateway "plant9" is defined' "$(sub 'Relay "plant1" "pump"' 'Relay "plant9" "pump"')"
refused "an invalid regex" \
  'option "Type": invalid regex "temp\[": ' "$(sub 'Type "temperature"' 'Type "/temp[/"')"
refused "a Trigger without On* options" \
  'at least one of "OnFailure", "OnWarning", "OnOkay", "OnMissing" is required' "$(sub '    OnFailure 1' '' | sed '/    OnOkay 0/d')"
refused "an OnFailure other than 0 or 1" \
  'option "OnFailure": expects an integer from 0 to 1, got 2' "$(sub 'OnFailure 1' 'OnFailure 2')"
refused "a JournalSync other than always, full or none" \
  'option "JournalSync": expects "always", "full" or "none", got "sometimes"' "$(sub 'UserId 12345' 'UserId 12345\n    JournalSync "sometimes"')"
refused "two token sources" \
  'give one of "TokenFile", "TokenCommand" and <Token>, not several' "$(sub 'UserId 12345' 'UserId 12345\n    TokenCommand "cat /dev/null"')"
refused "TLS options without a CA" \
  'TLS options need "CACert", "CAPath" or "TLSSystemCAs true"' "$(sub 'UserId 12345' 'UserId 12345\n    CertificateFile "/x"\n    CertificateKeyFile "/y"')"
refused "a TLSProtocol that is no TLS 1.2 or 1.3" \
  'option "TLSProtocol": expects "tlsv1.2" or "tlsv1.3", got "tlsv1"' "$(sub 'UserId 12345' 'UserId 12345\n    TLSProtocol "tlsv1"')"
printf 'short' >"$T/short-key"
refused "a <Token> with an unknown algorithm" \
  '<Token>, option "Algorithm": expects HS256, RS256 or ES256, got "HS512"' "$(sub "    TokenFile \"$T/token\"" "    <Token>\n      Algorithm \"HS512\"\n      KeyFile \"$T/short-key\"\n    </Token>")"
refused "an HS256 key shorter than 256 bits" \
  "Token KeyFile \"$T/short-key\" holds 5 bytes: an HS256 key needs at least 32" "$(sub "    TokenFile \"$T/token\"" "    <Token>\n      Algorithm \"HS256\"\n      KeyFile \"$T/short-key\"\n    </Token>")"
refused "a failing TokenCommand" \
  'TokenCommand failed \(exit status 3\)' "$(sub "    TokenFile \"$T/token\"" '    TokenCommand "exit 3"')"
refused "Triggers that loop through the plugin's own notifications" \
  'Triggers form a loop through the plugin.s own notifications' "$(sed 's|</Plugin>|  <Trigger "pump-then-fan">\n    Relay "plant1" "fan"\n    Plugin "bimetri"\n    Type "relay_on"\n    TypeInstance "pump"\n    OnOkay 1\n  </Trigger>\n  <Trigger "fan-then-pump">\n    Relay "plant1" "pump"\n    Plugin "/^bimetri$/"\n    TypeInstance "/^fa/"\n    OnOkay 0\n  </Trigger>\n</Plugin>|' <<<"$good")"
refused "a Trigger that drives the relay it watches" \
  'relay "pump" -> Trigger "self"' "$(sed 's|</Plugin>|  <Trigger "self">\n    Relay "plant1" "pump"\n    Plugin "bimetri"\n    TypeInstance "pump"\n    OnWarning 0\n  </Trigger>\n</Plugin>|' <<<"$good")"
refused "an unknown top-level option" \
  '<Plugin bimetri>, option "Gatway": unknown option' "$(sub '<Plugin bimetri>' '<Plugin bimetri>\n  Gatway "x"')"

# The good configuration starts (against a real broker).
unset BROKER_PORT
bm_start_broker
good=$(plant_conf)
bm_start_collectd "$good"
bm_check "the good configuration starts and connects" bm_wait_for 10 val_is current_connections 1
bm_done
