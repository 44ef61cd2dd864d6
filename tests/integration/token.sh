#!/usr/bin/env bash
# The JWT lifecycle against the real simulator, which verifies HS256 tokens
# and their exp:
# - TokenFile rotated while collectd runs (mv over it): the next command
#   carries the new token, the log names its fingerprint, the
#   timestamp-token_expiry metric follows exp;
# - a token within TokenWarn of exp raises a WARNING notification (type
#   token), an expired one a FAILURE, and a command with it fails at once
#   ("token expired ... not sent") without a publish; the relay is asked
#   again as soon as a good token arrives;
# - an "unauthorized" answer: with an unchanged file the relay waits for a
#   new token; with TokenCommand the token is renewed and the command retried
#   exactly once;
# - TokenCommand that fails or outlives TokenCommandTimeout is refused;
# - <Token> minting HS256 (accepted by the simulator), RS256 and ES256
#   (signatures checked with the openssl command line), claims and renewal;
# - a world-readable token or key file gets a warning, and no token, secret
#   or key appears in any log, output, metric or journal.
# Tokens other than the simulator's are made here with the openssl command
# line, so the plugin's JWT code is not checked against itself.
. "$top_srcdir/tests/integration/plant.sh"

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
b64url_decode() {
  local s=${1//-/+}
  s=${s//_//}
  while ((${#s} % 4)); do s+='='; done
  printf '%s' "$s" | openssl base64 -d -A
}
hex_of_file() { od -An -v -tx1 "$1" | tr -d ' \n'; }

# hs256 PAYLOAD_JSON [SECRET_FILE]: an HS256 JWT, signed with SECRET_FILE
# (default $T/secret).
hs256() {
  local h p s
  h=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | b64url)
  p=$(printf '%s' "$1" | b64url)
  s=$(printf '%s' "$h.$p" |
    openssl dgst -sha256 -mac HMAC -macopt "hexkey:$(hex_of_file "${2:-$T/secret}")" -binary | b64url)
  printf '%s.%s.%s' "$h" "$p" "$s"
}

# token_exp OFFSET [SECRET_FILE]: a token that expires OFFSET s from now.
token_exp() {
  hs256 "{\"iss\":\"token-test\",\"iat\":$((EPOCHSECONDS - 60)),\"exp\":$((EPOCHSECONDS + $1))}" "${2:-}"
}

# rotate TOKEN: replaces $T/token the way a rotation tool does: a new file
# (mode 600) renamed over the old one.
rotate() {
  printf '%s\n' "$1" >"$T/token.new" && chmod 600 "$T/token.new" &&
    mv -f "$T/token.new" "$T/token"
}

fp() { printf '%s' "$1" | sha256sum | cut -c1-12; }
exp_of() { b64url_decode "$(cut -d. -f2 <<<"$1")" | sed -nE 's/.*"exp":(-?[0-9]+).*/\1/p'; }

# claim NAME JSON: a string or integer member of a flat JSON object.
claim() { sed -nE "s/.*\"$1\":(\"([^\"]*)\"|(-?[0-9]+)).*/\\2\\3/p" <<<"$2"; }

# jwt_of LINE: the jwtToken of a captured command.
jwt_of() { sed -nE 's/.*"jwtToken":"([^"]*)".*/\1/p' <<<"$1"; }
# cmd N [LOG]: the Nth command captured (default $CMD_LOG); ncmd: how many.
cmd() { grep setExtDO "${2:-$CMD_LOG}" | sed -n "${1}p"; }
ncmd() { count "$CMD_LOG" setExtDO; }

# expiry_is WANT [GATEWAY]: timestamp-token_expiry is WANT. Read from the
# csv plugin's file: GETVAL prints a gauge with 7 significant digits only.
expiry_is() {
  [[ $(bm_csv_last "testhost/bimetri-${2:-plant1}/timestamp-token_expiry" 2>/dev/null) == "$1" ]]
}

notif_re() { # SEVERITY TYPE [GATEWAY]: a notification in the logfile
  echo "Notification: severity = $1, host = testhost, plugin = bimetri, plugin_instance = ${3:-plant1}, type = $2"
}

ALL_TOKENS=() # every token this test made or saw, for the leak check

# conf_with TOKEN_OPTIONS [GATEWAY_OPTIONS [MORE_BLOCKS]]: the plant with a
# token source other than TokenFile.
conf_with() {
  plant_conf "$1
    ${2:-}" "${3:-}" | sed '/^    TokenFile /d'
}

# ---------------------------------------------------------------------------
# Setup: a 48-byte shared secret, the broker, the simulator
# ---------------------------------------------------------------------------

openssl rand -hex 24 | tr -d '\n' >"$T/secret"
openssl rand -hex 24 | tr -d '\n' >"$T/secret2" # the wrong one
chmod 600 "$T/secret" "$T/secret2"
mkdir -p "$T/verify"

bm_start_broker
bm_sub_start resource/commands 2
CMD_LOG=$SUB_LOG
bm_start_gwsim --secret-file "$T/secret" --delay 100

# ---------------------------------------------------------------------------
# 1. TokenFile: rotation, expiry, unauthorized
# ---------------------------------------------------------------------------

TOK_A=$(token_exp 7200)
ALL_TOKENS+=("$TOK_A")
printf '%s\n' "$TOK_A" >"$T/token"
chmod 644 "$T/token" # group and others may read it: a warning
bm_start_collectd "$(plant_conf)"
bm_check "connected" bm_wait_for 10 val_is current_connections 1
bm_check "the log names the first token by its fingerprint" \
  grep -qF "gateway \"plant1\": token $(fp "$TOK_A") ready" "$T/collectd.log"
bm_check "a TokenFile readable by others gets a warning" \
  grep -qF "[warning] bimetri plugin: TokenFile \"$T/token\" is readable by group or others (mode 0644)" "$T/collectd.log"
bm_check "token_expiry is the token's exp" bm_wait_for 5 expiry_is "$(exp_of "$TOK_A")"
bm_is "$(count "$T/collectd.log" "type = token")" 0 "a token valid beyond TokenWarn raises no token notification"

bm_notify failure sensors temperature "" "too hot"
bm_check "bool-pump is 1" wait_val bool-pump 1 10
bm_is "$(jwt_of "$(cmd 1)")" "$TOK_A" "the first command carries the token of the file"

# Rotation, and a command right after it: the file is checked before commands.
TOK_B=$(token_exp 7300)
ALL_TOKENS+=("$TOK_B")
rotate "$TOK_B"
bm_notify okay sensors temperature "" "cool"
bm_check "bool-pump is 0" wait_val bool-pump 0 10
bm_is "$(jwt_of "$(cmd 2)")" "$TOK_B" "after the rotation the next command carries the new token"
bm_check "the log says: new token <fingerprint>" \
  bm_wait_log "$T/collectd.log" "gateway \"plant1\": new token $(fp "$TOK_B")\$" 5
bm_check "token_expiry follows the new token" bm_wait_for 5 expiry_is "$(exp_of "$TOK_B")"

# Within TokenWarn (3600 s) of exp: a WARNING.
TOK_W=$(token_exp 600)
ALL_TOKENS+=("$TOK_W")
rotate "$TOK_W"
bm_check "a token expiring within TokenWarn: a WARNING notification of type token" \
  bm_wait_log "$T/collectd.log" "$(notif_re WARNING token), message = token $(fp "$TOK_W") expires in (5[0-9][0-9]|600) s \\(at $(exp_of "$TOK_W")\\)" 5
bm_check "token_expiry is the expiring token's exp" bm_wait_for 5 expiry_is "$(exp_of "$TOK_W")"

# Expired (beyond the 60 s TokenLeeway): FAILURE, and commands are not sent.
TOK_E=$(token_exp -120)
ALL_TOKENS+=("$TOK_E")
rotate "$TOK_E"
bm_check "an expired token: a FAILURE notification of type token" \
  bm_wait_log "$T/collectd.log" "$(notif_re FAILURE token), message = token $(fp "$TOK_E") expired at $(exp_of "$TOK_E")" 5
bm_check "token_expiry is the expired token's exp" bm_wait_for 5 expiry_is "$(exp_of "$TOK_E")"
bm_notify failure sensors temperature "" "too hot again"
bm_check "the command fails at once: FAILURE \"token expired ... not sent\"" \
  bm_wait_log "$T/collectd.log" "$(notif_re FAILURE relay_result), type_instance = pump, message = .*ended: token expired \\(token $(fp "$TOK_E")\\): not sent" 5
sleep 1.5
bm_is "$(ncmd)" 2 "nothing was published with the expired token"
bm_is "$(count "$T/gwsim.log" "^cmd ")" 2 "the simulator received nothing"
bm_is "$(val pending_operations-pump)" 0 "nothing is pending"
bm_is "$(val bool-pump)" 0 "the pump stays off"

# A good token: the waiting relay is asked again by itself.
TOK_G=$(token_exp 7200)
ALL_TOKENS+=("$TOK_G")
rotate "$TOK_G"
bm_check "with a new token the waiting relay is switched without a new trigger" wait_val bool-pump 1 10
bm_is "$(jwt_of "$(cmd 3)")" "$TOK_G" "the retried command carries the new token"
bm_check "an OKAY notification says the new token is valid" \
  bm_wait_log "$T/collectd.log" "$(notif_re OKAY token), message = token $(fp "$TOK_G") is valid" 5

# Signed with another secret: the simulator answers unauthorized; the file
# did not change, so nothing is retried and the relay waits.
TOK_X=$(token_exp 7200 "$T/secret2")
ALL_TOKENS+=("$TOK_X")
rotate "$TOK_X"
bm_check "the badly signed token is picked up" \
  bm_wait_log "$T/collectd.log" "gateway \"plant1\": new token $(fp "$TOK_X")\$" 5
bm_notify okay sensors temperature "" "cool again"
bm_check "unauthorized: FAILURE notification for the command" \
  bm_wait_log "$T/collectd.log" "$(notif_re FAILURE relay_result), type_instance = pump, message = .*ended: .*nauthori" 10
bm_check "unauthorized: the log says the relay waits for a new token" \
  bm_wait_log "$T/collectd.log" "\\[error\\] bimetri plugin: gateway \"plant1\": the gateway refused token $(fp "$TOK_X"): waiting for a new token" 5
sleep 1.5
bm_is "$(ncmd)" 4 "an unchanged token is not retried"
bm_is "$(jwt_of "$(cmd 4)")" "$TOK_X" "the refused command carried the badly signed token"
bm_check "the simulator said unauthorized" grep -q "result=unauthorized" "$T/gwsim.log"
bm_is "$(val bool-pump)" 1 "the pump stays on"
bm_check "operations-unauthorized is 1" wait_val operations-unauthorized 1 5

TOK_G2=$(token_exp 7200)
ALL_TOKENS+=("$TOK_G2")
rotate "$TOK_G2"
bm_check "after unauthorized, a new token switches the waiting relay by itself" wait_val bool-pump 0 10
bm_is "$(jwt_of "$(cmd 5)")" "$TOK_G2" "the retried command carries the new token"
bm_is "$(ncmd)" 5 "one retry, no more"

# The file gone for a while (a careless rotation): a warning naming it, and
# the token in use stays.
mv "$T/token" "$T/token.away"
bm_check "a vanished TokenFile: a warning naming it, the token is kept" \
  bm_wait_log "$T/collectd.log" "\\[warning\\] bimetri plugin: gateway \"plant1\": cannot stat TokenFile \"$T/token\": No such file or directory; keeping token $(fp "$TOK_G2")" 5
bm_notify failure sensors temperature "" "hot, token file gone"
bm_check "commands still go out with the kept token" wait_val bool-pump 1 10
bm_is "$(jwt_of "$(cmd 6)")" "$TOK_G2" "... carrying it"
mv "$T/token.away" "$T/token"
bm_stop_collectd
bm_is $? 0 "collectd shuts down cleanly"

# ---------------------------------------------------------------------------
# 2. TokenCommand
# ---------------------------------------------------------------------------

# The command prints a badly signed token; before the trigger the source
# behind it is fixed. unauthorized -> the command runs again -> a different
# token -> the command is retried once, and confirmed.
TOK_X2=$(token_exp 7200 "$T/secret2")
TOK_G3=$(token_exp 7200)
ALL_TOKENS+=("$TOK_X2" "$TOK_G3")
printf '%s\n' "$TOK_X2" >"$T/cmdtoken"
chmod 600 "$T/cmdtoken"
sent=$(ncmd)
from=$(_bm_lines "$T/collectd.log")
bm_start_collectd "$(conf_with "TokenCommand \"cat $T/cmdtoken\"
    TokenCommandTimeout 5")"
bm_check "TokenCommand: connected" bm_wait_for 10 val_is current_connections 1
bm_check "TokenCommand: its token is in use" \
  grep -qF "gateway \"plant1\": token $(fp "$TOK_X2") ready" "$T/collectd.log"
bm_check "the pump's state (on) is restored from the journal" wait_val bool-pump 1 5
printf '%s\n' "$TOK_G3" >"$T/cmdtoken"
bm_notify okay sensors temperature "" "cool"
bm_check "unauthorized, renewed, retried once: bool-pump is 0" wait_val bool-pump 0 10
bm_is "$(jwt_of "$(cmd $((sent + 1)))")" "$TOK_X2" "the first attempt carried the command's first token"
bm_is "$(jwt_of "$(cmd $((sent + 2)))")" "$TOK_G3" "the retry carried the renewed token"
bm_check "the log says it retries once with the new token" \
  grep -qF "gateway \"plant1\": unauthorized with token $(fp "$TOK_X2"); retrying once with token $(fp "$TOK_G3")" "$T/collectd.log"
bm_is "$(ncmd)" $((sent + 2)) "two publishes in all"
bm_is "$(tail -n "+$from" "$T/collectd.log" | grep -c "$(notif_re FAILURE relay_result)")" 0 \
  "no FAILURE notification for a command whose retry with a renewed token succeeded"
bm_stop_collectd

# Both the token and its renewal are refused: one retry, then FAILURE.
TOK_X3=$(token_exp 7200 "$T/secret2")
TOK_X4=$(token_exp 7100 "$T/secret2")
ALL_TOKENS+=("$TOK_X3" "$TOK_X4")
printf '%s\n' "$TOK_X3" >"$T/cmdtoken"
sent=$(ncmd)
from=$(_bm_lines "$T/collectd.log")
bm_start_collectd "$(conf_with "TokenCommand \"cat $T/cmdtoken\"")"
bm_check "connected again" bm_wait_for 10 val_is current_connections 1
bm_check "the pump's state (off) is restored from the journal" wait_val bool-pump 0 5
printf '%s\n' "$TOK_X4" >"$T/cmdtoken"
bm_notify failure sensors temperature "" "hot"
bm_check "after the retry is refused too: FAILURE, waiting for a new token" \
  bm_wait_log "$T/collectd.log" "gateway \"plant1\": the gateway refused token $(fp "$TOK_X4"): waiting for a new token" 10
sleep 1.5
bm_is "$(ncmd)" $((sent + 2)) "exactly one retry after unauthorized"
bm_is "$(jwt_of "$(cmd $((sent + 2)))")" "$TOK_X4" "the retry carried the renewed token"
bm_is "$(tail -n "+$from" "$T/collectd.log" | grep -c "$(notif_re FAILURE relay_result)")" 1 \
  "one FAILURE notification for the command"
bm_is "$(val bool-pump)" 0 "the pump stays off"
bm_stop_collectd

# refused NAME LOG_REGEX CONF MAX_S: the configuration is refused within
# MAX_S seconds, with LOG_REGEX in the log, and never connects.
refused() {
  local name=$1 want=$2 conf=$3 max=$4 from t0 took log
  from=$(_bm_lines "$T/collectd.log")
  t0=$EPOCHREALTIME
  if bm_try_start_collectd "$conf" >/dev/null 2>&1; then
    took=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    bm_stop_collectd >/dev/null 2>&1
  else
    took=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  fi
  log=$(tail -n "+$((from + 1))" "$T/collectd.log")
  bm_like "$log" "$want" "$name: the error is logged"
  bm_unlike "$log" 'connected to' "$name: the plugin does not run"
  awk -v t="$took" -v m="$max" 'BEGIN { exit !(t < m) }'
  bm_ok $? "$name: refused in ${took}s (under ${max}s)"
}
refused "a TokenCommand that outlives TokenCommandTimeout" \
  '\[error\] bimetri plugin: <Gateway "plant1">: TokenCommand did not finish within 1 s' \
  "$(conf_with 'TokenCommand "exec sleep 30"
    TokenCommandTimeout 1')" 8
refused "a TokenCommand that fails" \
  '\[error\] bimetri plugin: <Gateway "plant1">: TokenCommand failed \(exit status 3\)' \
  "$(conf_with 'TokenCommand "echo not-this; exit 3"')" 8
refused "a TokenCommand that prints nothing" \
  '\[error\] bimetri plugin: <Gateway "plant1">: TokenCommand printed nothing' \
  "$(conf_with 'TokenCommand "true"')" 8

# ---------------------------------------------------------------------------
# 3. <Token>: minted HS256, RS256, ES256
# ---------------------------------------------------------------------------

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$T/rs.key" 2>/dev/null &&
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/es.key" 2>/dev/null &&
  openssl pkey -in "$T/rs.key" -pubout -out "$T/verify/rs.pub" &&
  openssl pkey -in "$T/es.key" -pubout -out "$T/verify/es.pub" ||
  bm_bail "openssl cannot make the RS256/ES256 keys"
chmod 644 "$T/rs.key" # a warning
chmod 600 "$T/es.key"

# mint_gw NAME ALG KEY MORE: a Gateway minting its tokens, commands to the
# topic of the second simulator (which checks no signature), with a Trigger
# on notifications of plugin "mint", type NAME.
mint_gw() {
  cat <<EOF
  <Gateway "$1">
    Host "127.0.0.1"
    Port $BROKER_PORT
    AppName "mintApp"
    InstanceId "$1"
    UserId 7
    OrganizationId 8
    CommandTopic "resource/commands-nocheck"
    TokenWarn 10
    <Token>
      Algorithm "$2"
      KeyFile "$3"
      Issuer "collectd-$1"
      Subject "plant-$1"
      Audience "bimetri-gateway"
      Claim "site" "north-$1"
      $4
    </Token>
    <Relay "r">
      ResourceId 301
      Output 1
    </Relay>
  </Gateway>
  <Trigger "$1">
    Relay "$1" "r"
    Plugin "mint"
    Type "$1"
    OnFailure 1
  </Trigger>
EOF
}

BM_GWSIM_TOPIC=resource/commands-nocheck bm_start_gwsim \
  --command-topic resource/commands-nocheck --delay 100
bm_sub_start 'resource/#' 2
MINT_LOG=$SUB_LOG
sent=$(ncmd)
from=$(_bm_lines "$T/collectd.log")
bm_start_collectd "$(conf_with '<Token>
      Algorithm "HS256"
      KeyFile "'"$T/secret"'"
      Issuer "collectd-plant1"
      Subject "plant1"
      Audience "bimetri-gateway"
      Lifetime 600
      RenewBefore 60
      Claim "site" "plant-one"
      Claim "role" "relay-control"
    </Token>' "TokenWarn 10
    JournalFile \"$T/mint.journal\"" \
  "$(mint_gw rs RS256 "$T/rs.key" 'Lifetime 900'; mint_gw es ES256 "$T/es.key" 'Lifetime 60
      RenewBefore 55')")"
conn_is() { [[ $(bm_getval "testhost/bimetri-$1/current_connections" 2>/dev/null) == 1 ]]; }
for g in plant1 rs es; do
  bm_check "<Token>: $g connects" bm_wait_for 10 conn_is "$g"
done

# check_claims NAME TOKEN ALG LIFETIME SITE: header and payload of a minted token.
check_claims() {
  local g=$1 tok=$2 alg=$3 life=$4 site=$5 h p iat
  h=$(b64url_decode "$(cut -d. -f1 <<<"$tok")")
  p=$(b64url_decode "$(cut -d. -f2 <<<"$tok")")
  bm_is "$(claim alg "$h")" "$alg" "$g: the header says $alg"
  bm_is "$(claim iss "$p")/$(claim sub "$p")/$(claim aud "$p")" \
    "collectd-$g/$([[ $g == plant1 ]] && echo plant1 || echo "plant-$g")/bimetri-gateway" \
    "$g: iss, sub and aud are the configured ones"
  bm_is "$(claim site "$p")" "$site" "$g: the extra Claim is there"
  iat=$(claim iat "$p")
  bm_is "$(($(claim exp "$p") - iat))" "$life" "$g: exp is iat + Lifetime"
  bm_is "$(claim nbf "$p")" "$iat" "$g: nbf is iat"
  ((iat <= EPOCHSECONDS && iat >= EPOCHSECONDS - 120))
  bm_ok $? "$g: iat is now ($iat)"
  bm_like "$(claim jti "$p")" '^[0-9a-f]{32}$' "$g: jti is 128 random bits in hex"
}

# HS256, checked by the simulator.
bm_notify failure sensors temperature "" "hot"
bm_check "HS256 minted with the shared secret: the simulator accepts it (bool-pump 1)" \
  wait_val bool-pump 1 10
TOK_H=$(jwt_of "$(cmd $((sent + 1)))")
ALL_TOKENS+=("$TOK_H")
check_claims plant1 "$TOK_H" HS256 600 plant-one
bm_is "$(claim role "$(b64url_decode "$(cut -d. -f2 <<<"$TOK_H")")")" relay-control "plant1: the second Claim too"
bm_is "$(hs256 "$(b64url_decode "$(cut -d. -f2 <<<"$TOK_H")")")" "$TOK_H" \
  "HS256: openssl's HMAC over the same header and payload gives the same token"
bm_check "HS256: token_expiry is the minted exp" \
  bm_wait_for 5 expiry_is "$(exp_of "$TOK_H")"

# RS256 and ES256: the second simulator answers sent without checking;
# openssl checks the signatures.
bm_notify failure mint rs "" "go"
bm_notify failure mint es "" "go"
bm_check "rs: confirmed" bm_wait_for 10 bash -c "[[ \$(grep -c '\"appId\":\"mintApp.rs\"' '$MINT_LOG') -ge 1 ]]"
bm_check "es: confirmed" bm_wait_for 10 bash -c "[[ \$(grep -c '\"appId\":\"mintApp.es\"' '$MINT_LOG') -ge 1 ]]"
TOK_R=$(jwt_of "$(grep '"appId":"mintApp.rs"' "$MINT_LOG" | head -1)")
TOK_S=$(jwt_of "$(grep '"appId":"mintApp.es"' "$MINT_LOG" | head -1)")
ALL_TOKENS+=("$TOK_R" "$TOK_S")
check_claims rs "$TOK_R" RS256 900 north-rs
check_claims es "$TOK_S" ES256 60 north-es

b64url_decode "$(cut -d. -f3 <<<"$TOK_R")" >"$T/verify/rs.sig"
bm_like "$(printf '%s' "${TOK_R%.*}" | openssl dgst -sha256 -verify "$T/verify/rs.pub" \
  -signature "$T/verify/rs.sig" 2>&1)" "Verified OK" "RS256: openssl verifies the signature with the public key"
bm_unlike "$(printf '%s' "${TOK_R%.*}x" | openssl dgst -sha256 -verify "$T/verify/rs.pub" \
  -signature "$T/verify/rs.sig" 2>&1)" "Verified OK" "RS256: and refuses it over other data"

# ES256: JOSE's R || S (32 + 32 bytes) to the DER openssl wants.
b64url_decode "$(cut -d. -f3 <<<"$TOK_S")" >"$T/verify/es.raw"
bm_is "$(stat -c %s "$T/verify/es.raw")" 64 "ES256: the signature is 64 bytes (R || S)"
sig=$(hex_of_file "$T/verify/es.raw")
printf 'asn1=SEQUENCE:sig\n[sig]\nr=INTEGER:0x%s\ns=INTEGER:0x%s\n' "${sig:0:64}" "${sig:64:64}" >"$T/verify/es.cnf"
openssl asn1parse -genconf "$T/verify/es.cnf" -out "$T/verify/es.der" -noout >/dev/null ||
  bm_bail "openssl asn1parse cannot encode the ES256 signature"
bm_like "$(printf '%s' "${TOK_S%.*}" | openssl dgst -sha256 -verify "$T/verify/es.pub" \
  -signature "$T/verify/es.der" 2>&1)" "Verified OK" "ES256: openssl verifies the signature with the public key"
bm_unlike "$(printf '%s' "${TOK_S%.*}x" | openssl dgst -sha256 -verify "$T/verify/es.pub" \
  -signature "$T/verify/es.der" 2>&1)" "Verified OK" "ES256: and refuses it over other data"

bm_check "a key file readable by others gets a warning" \
  grep -qF "[warning] bimetri plugin: Token KeyFile \"$T/rs.key\" is readable by group or others (mode 0644)" "$T/collectd.log"
bm_is "$(count "$T/collectd.log" "Token KeyFile \"$T/es.key\" is readable")" 0 "a key file of mode 600 gets none"

# Renewal: es lives 60 s and is renewed when 55 s or less remain.
bm_is "$(tail -n "+$from" "$T/collectd.log" | grep -c "type = token")" 0 \
  "TokenWarn 10: tokens of 60 s and more raise no token notification"
es_exp1=$(exp_of "$TOK_S")
bm_check "es: the minted token is renewed before RenewBefore" \
  bm_wait_log "$T/collectd.log" 'gateway "es": new token [0-9a-f]{12}$' 10
es_exp_later() {
  local e
  e=$(bm_csv_last testhost/bimetri-es/timestamp-token_expiry) && ((e > es_exp1))
}
bm_check "es: token_expiry moves on with the renewal" bm_wait_for 5 es_exp_later
bm_stop_collectd
bm_is $? 0 "collectd shuts down cleanly"

# ---------------------------------------------------------------------------
# 4. No secret anywhere
# ---------------------------------------------------------------------------

# Every file of the test but the token, secret and key files themselves, the
# configurations, the mosquitto_sub captures (they hold the commands) and
# the scratch files of the signature checks.
leaks() {
  local -a pats=()
  local t k
  for t in "${ALL_TOKENS[@]}"; do
    [[ $t == *.*.?* ]] || { echo "not a token: '$t'"; return; }
    pats+=(-e "$t" -e "${t##*.}") # the token, and its signature alone
  done
  pats+=(-e "$(<"$T/secret")" -e "$(<"$T/secret2")")
  for k in rs es; do # a line of each private key
    pats+=(-e "$(sed -n 2p "$T/$k.key")")
  done
  grep -rlsF "${pats[@]}" --exclude=token --exclude=token.new \
    --exclude='secret*' --exclude=cmdtoken --exclude='*.key' --exclude='*.conf' \
    --exclude='sub*.log' --exclude-dir=verify "$T"
}
bm_is "$(leaks)" "" "no token, secret or key in any log, output, metric or journal"
bm_done
