#!/usr/bin/env bash
# TLS per Gateway against a real mosquitto with TLS listeners, with
# certificates made at test time by the openssl command line: the right CA
# connects and a command round-trips through the simulator; a wrong CA, an
# expired or misnamed server certificate and a missing client certificate
# are refused, logged, retried with backoff, and collectd keeps running;
# mutual TLS (plain and encrypted client key), CAPath, TLSProtocol,
# CipherSuite, TLSVerifyHostname/TLSVerifyPeer false (a WARNING at every
# connect), a CACert that appears later, TLSSystemCAs, the 8883 default, and
# PasswordFile for the MQTT password.
#
# One broker: the plain listener of lib.sh (the simulator and mosquitto_sub
# use it) plus one TLS listener per server certificate. A TLS 1.2-only
# `openssl s_server -www` stands in for a broker where a protocol or cipher
# mismatch must be seen. Every Gateway but plant1 has its own InstanceId, so
# all of them run side by side in one collectd.
. "$top_srcdir/tests/integration/plant.sh"

P=$T/pki

# make_pki: a CA, a second unrelated CA, server certificates for
# 127.0.0.1/localhost (valid and expired) and for another name, a client
# certificate, the client key encrypted with a passphrase, a CAPath
# directory. All P-256, all in $P.
make_pki() {
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  mkdir -p "$P/newcerts" "$P/capath" || return 1
  : >"$P/index.txt"
  echo 1000 >"$P/serial"
  cat >"$P/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[srv]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
[other]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:gateway.example.net
[cli]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
[ca]
default_ca = testca
[testca]
database = $P/index.txt
new_certs_dir = $P/newcerts
serial = $P/serial
default_md = sha256
policy = anything
unique_subject = no
[anything]
commonName = supplied
EOF
  (
    set -e
    cd "$P"
    req() { openssl req -config openssl.cnf "$@" 2>>openssl.out; }
    sign() { # CSR OUT EXTENSIONS
      openssl x509 -req -in "$1" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -days 30 -extfile openssl.cnf -extensions "$3" -out "$2" 2>>openssl.out
    }
    req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 30 \
      -subj /CN=bimetri-test-ca -extensions v3_ca
    req -x509 "${ec[@]}" -keyout ca2.key -out ca2.pem -days 30 \
      -subj /CN=unrelated-ca -extensions v3_ca
    req -new "${ec[@]}" -keyout srv.key -out srv.csr -subj /CN=localhost
    sign srv.csr srv.pem srv
    req -new "${ec[@]}" -keyout other.key -out other.csr -subj /CN=gateway.example.net
    sign other.csr other.pem other
    req -new "${ec[@]}" -keyout cli.key -out cli.csr -subj /CN=collectd-client
    sign cli.csr cli.pem cli
    # Valid in January 2020 only.
    req -new "${ec[@]}" -keyout exp.key -out exp.csr -subj /CN=localhost
    openssl ca -config openssl.cnf -batch -notext -cert ca.pem -keyfile ca.key \
      -in exp.csr -out exp.pem -startdate 20200101000000Z \
      -enddate 20200201000000Z -extfile openssl.cnf -extensions srv 2>>openssl.out
    # The client key again, encrypted with a passphrase.
    printf '%s\n' "key-pass-$RANDOM$RANDOM" >keypass
    openssl pkey -in cli.key -aes256 -passout file:keypass -out cli-enc.key
    cp ca.pem capath/
    openssl rehash capath
    chmod 600 ./*.key keypass
  )
}

make_pki || bm_bail "cannot make the test certificates (see $P/openssl.out)"
bm_check "the server certificate verifies against the CA" \
  openssl verify -CAfile "$P/ca.pem" "$P/srv.pem" "$P/other.pem" "$P/cli.pem"
bm_like "$(openssl verify -CAfile "$P/ca.pem" "$P/exp.pem" 2>&1)" "certificate has expired" \
  "the expired server certificate is expired"
bm_like "$(openssl pkey -in "$P/cli-enc.key" -passin pass:wrong -noout 2>&1)" "bad decrypt|unable to load" \
  "the encrypted client key needs its passphrase"

mapfile -t ports < <(bm_free_port 7)
((${#ports[@]} == 7)) || bm_bail "no free TCP ports"
BROKER_PORT=${ports[0]} # the plain listener of lib.sh
P_OK=${ports[1]}        # the right server certificate
P_EXP=${ports[2]}       # an expired one
P_OTHER=${ports[3]}     # one for gateway.example.net
P_MTLS=${ports[4]}      # client certificates required
P_S12=${ports[5]}       # openssl s_server, TLS 1.2 and one cipher only
P_NONE=${ports[6]}      # nobody listens

# The MQTT user of the PasswordFile gateways (anonymous access stays on for
# the others: mosquitto still refuses a known user with a wrong password).
MQTT_PASS=mqtt-pass-$RANDOM$RANDOM
mosquitto_passwd -c -b "$P/mosquitto.passwd" bmuser "$MQTT_PASS" >/dev/null 2>&1 ||
  bm_bail "mosquitto_passwd failed"
printf '%s\n' "$MQTT_PASS" >"$P/mqtt-pass"
printf '%s\n' "wrong-$MQTT_PASS" >"$P/mqtt-pass-wrong"
chmod 600 "$P/mqtt-pass" "$P/mqtt-pass-wrong"

bm_start_broker "password_file $P/mosquitto.passwd" \
  "listener $P_OK 127.0.0.1" \
  "certfile $P/srv.pem" "keyfile $P/srv.key" \
  "listener $P_EXP 127.0.0.1" \
  "certfile $P/exp.pem" "keyfile $P/exp.key" \
  "listener $P_OTHER 127.0.0.1" \
  "certfile $P/other.pem" "keyfile $P/other.key" \
  "listener $P_MTLS 127.0.0.1" \
  "certfile $P/srv.pem" "keyfile $P/srv.key" \
  "cafile $P/ca.pem" "require_certificate true"
for p in "$P_OK" "$P_EXP" "$P_OTHER" "$P_MTLS"; do
  _bm_port_open "$p" || bm_bail "the broker does not listen on TLS port $p"
done

# The TLS 1.2-only server: -www keeps it accepting without a terminal.
openssl s_server -accept "127.0.0.1:$P_S12" -cert "$P/srv.pem" -key "$P/srv.key" \
  -tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256 -www \
  </dev/null >"$T/s_server.out" 2>&1 &
_bm_track $! "openssl s_server"
bm_wait_for 10 _bm_port_open "$P_S12" >/dev/null || bm_bail "openssl s_server did not start"

plant_token
chmod 600 "$T/token" "$T/secret"
bm_sub_start resource/commands 2
CMD_LOG=$SUB_LOG
bm_start_gwsim --secret-file "$T/secret" --delay 100

# gw NAME INSTANCE PORT [OPTION_LINES]: a Gateway with one relay, to PORT.
gw() {
  cat <<EOF
  <Gateway "$1">
    Host "127.0.0.1"
    Port $3
    AppName "tlsApp"
    InstanceId "$2"
    UserId 1
    OrganizationId 2
    TokenFile "$T/token"
    KeepAlive ${KEEPALIVE:-5}
    $4
    <Relay "r">
      ResourceId 201
      Output 1
    </Relay>
  </Gateway>
EOF
}

CA="CACert \"$P/ca.pem\""
CLIENT="CertificateFile \"$P/cli.pem\"
    CertificateKeyFile \"$P/cli.key\""
LATE_CA=$T/late/ca.pem # does not exist yet

gateways=$(
  gw tls13 2 "$P_OK" "$CA
    TLSProtocol \"tlsv1.3\""
  gw capath 3 "$P_OK" "CAPath \"$P/capath\""
  gw mtls 4 "$P_MTLS" "$CA
    $CLIENT"
  gw mtlsenc 5 "$P_MTLS" "$CA
    CertificateFile \"$P/cli.pem\"
    CertificateKeyFile \"$P/cli-enc.key\"
    CertificateKeyPasswordFile \"$P/keypass\""
  gw mtlsinline 20 "$P_MTLS" "$CA
    CertificateFile \"$P/cli.pem\"
    CertificateKeyFile \"$P/cli-enc.key\"
    CertificateKeyPassword \"$(<"$P/keypass")\""
  gw mtlsnocert 6 "$P_MTLS" "$CA"
  gw mtlsbadpass 7 "$P_MTLS" "$CA
    CertificateFile \"$P/cli.pem\"
    CertificateKeyFile \"$P/cli-enc.key\"
    CertificateKeyPassword \"not-the-passphrase\""
  gw wrongca 8 "$P_OK" "CACert \"$P/ca2.pem\""
  gw expired 9 "$P_EXP" "$CA"
  gw othername 10 "$P_OTHER" "$CA"
  gw nohostcheck 11 "$P_OTHER" "$CA
    TLSVerifyHostname false"
  gw nopeercheck 12 "$P_OK" "CACert \"$P/ca2.pem\"
    TLSVerifyPeer false"
  gw lateca 13 "$P_OK" "CACert \"$LATE_CA\""
  gw tls13vs12 14 "$P_S12" "$CA
    TLSProtocol \"tlsv1.3\""
  gw cipher 15 "$P_S12" "$CA
    CipherSuite \"ECDHE-ECDSA-AES256-GCM-SHA384\""
  gw cipherok 16 "$P_OK" "$CA
    TLSProtocol \"tlsv1.2\"
    CipherSuite \"ECDHE-ECDSA-AES128-GCM-SHA256\""
  gw pwfile 17 "$BROKER_PORT" "User \"bmuser\"
    PasswordFile \"$P/mqtt-pass\""
  gw pwwrong 18 "$BROKER_PORT" "User \"bmuser\"
    PasswordFile \"$P/mqtt-pass-wrong\""
  gw defport 19 0 "$CA" | sed '/^    Port 0$/d'
  gw latekey 21 "$P_MTLS" "$CA
    CertificateFile \"$P/cli.pem\"
    CertificateKeyFile \"$T/late/cli.key\""
)

# A broker whose TCP handshake takes seconds (SYNs unanswered for 4 s, as
# across a network): the TLS handshake must start once the connect
# completes (it stalled and the gateway thread spun until the keepalive).
# libmosquitto gives a connect KeepAlive seconds to get its CONNACK; the
# kernel sends the SYN again 1, 3 and 7 s after the first, so the connect
# completes within 7 s of it: KeepAlive 15, where a stalled handshake is
# lost.
P_SLOW=$(bm_free_port)
"$top_builddir/tests/synlate" "$P_SLOW" "$P_OK" 4 $((BM_TEST_TIMEOUT)) >"$T/synlate.out" 2>&1 &
_bm_track $! synlate
bm_wait_for 5 grep -q '^ready' "$T/synlate.out" || bm_bail "tests/synlate did not start"
gateways+=$'\n'$(KEEPALIVE=15 gw slow 22 "$P_SLOW" "$CA")

bm_start_collectd "$(BROKER_PORT=$P_OK plant_conf "$CA" "$gateways")"

conn() { bm_getval "testhost/bimetri-$1/current_connections"; }
conn_is() { [[ $(conn "$1" 2>/dev/null) == "$2" ]]; }
# gwlog NAME: the plugin's log lines about Gateway NAME.
gwlog() { grep -F "bimetri plugin: gateway \"$1\": " "$T/collectd.log"; }

# --- the right CA: connected, and a command round-trips ---------------------
bm_check "plant1 connects over TLS with the right CACert" bm_wait_for 10 conn_is plant1 1
bm_notify failure sensors temperature "" "too hot"
bm_check "the command went through the TLS connection to the simulator" \
  bm_wait_log "$CMD_LOG" '"correlationId":"[0-9a-f]{16}-[0-9]+","parameters":\{"resourceId":101,"output":4,"status":1\}' 10
bm_check "the simulator's answer came back: bool-pump is 1" wait_val bool-pump 1 10
bm_check "the broker saw clients on its TLS port" \
  grep -qE "New connection from 127\.0\.0\.1:[0-9]+ on port $P_OK\." "$T/mosquitto.log"

for g in tls13 capath mtls mtlsenc mtlsinline nohostcheck nopeercheck cipherok pwfile; do
  bm_check "Gateway $g connects" bm_wait_for 10 conn_is "$g" 1
done
bm_check "Gateway slow connects once its TCP handshake completes" \
  bm_wait_for 20 conn_is slow 1
bm_check "through the relay that held its first SYNs" grep -q '^accepted' "$T/synlate.out"
bm_is "$(gwlog slow | grep -c 'lost')" 0 \
  "Gateway slow never lost a connection: its handshake did not stall ($(gwlog slow | grep 'lost' | head -1))"

# --- refusals ---------------------------------------------------------------
# Seven seconds give attempts at about 0, 1, 3 and 7 s with a doubling backoff.
sleep 7
for g in wrongca expired othername mtlsnocert mtlsbadpass tls13vs12 cipher pwwrong defport; do
  bm_is "$(conn "$g" 2>/dev/null)" 0 "Gateway $g is not connected (current_connections 0)"
done
bm_check "wrong CA: an ERROR about the verification" \
  grep -qE "\[error\] bimetri plugin: gateway \"wrongca\": MQTT: .*certificate verify failed" "$T/collectd.log"
bm_check "expired certificate: an ERROR about the verification" \
  grep -qE "\[error\] bimetri plugin: gateway \"expired\": MQTT: .*certificate verify failed" "$T/collectd.log"
bm_check "another host name: an ERROR about the host name" \
  grep -qE "\[error\] bimetri plugin: gateway \"othername\": MQTT: .*host ?name verification failed" "$T/collectd.log"
bm_check "TLS 1.3 against a TLS 1.2-only server: a protocol error" \
  grep -qE "\[error\] bimetri plugin: gateway \"tls13vs12\": MQTT: .*(protocol version|unsupported protocol)" "$T/collectd.log"
bm_check "no shared cipher: a handshake failure" \
  grep -qE "\[error\] bimetri plugin: gateway \"cipher\": MQTT: .*handshake failure" "$T/collectd.log"
bm_check "the encrypted key with a wrong passphrase: an ERROR about the key" \
  grep -qE "\[error\] bimetri plugin: gateway \"mtlsbadpass\": .*(key|bad decrypt)" "$T/collectd.log"
bm_check "the broker refused the client without a certificate" \
  grep -qE "OpenSSL Error.*peer did not return a certificate" "$T/mosquitto.log"
bm_check "a wrong MQTT password is refused by the broker" \
  grep -qE "gateway \"pwwrong\": broker 127\.0\.0\.1:$BROKER_PORT refused the connection: .*(authori[sz]ed|password)" "$T/collectd.log"
bm_check "without Port a TLS Gateway goes to 8883" \
  grep -qE "gateway \"defport\": .*127\.0\.0\.1:8883" "$T/collectd.log"

# backoff NAME: the delays the plugin announced between NAME's attempts.
backoff() {
  gwlog "$1" | sed -nE 's/.*(reconnecting|retrying) in ([0-9.]+) s.*/\2/p' | tr '\n' ' '
}
bm_like "$(backoff wrongca)" '^1 2 4 ' "wrong CA: the reconnect delay doubles (1 2 4 s)"
bm_like "$(backoff expired)" '^1 2 4 ' "expired certificate: the reconnect delay doubles"
n=$(gwlog wrongca | grep -c 'certificate verify failed')
((n >= 3 && n <= 8))
bm_ok $? "wrong CA: a handful of attempts in 7 s, not a storm (got $n)"

# --- a CACert that cannot be read yet ------------------------------------------
bm_check "an unreadable CACert: an ERROR naming the option and the file" \
  grep -qF "[error] bimetri plugin: gateway \"lateca\": cannot read CACert \"$LATE_CA\": No such file or directory; retrying" "$T/collectd.log"
n=$(gwlog lateca | grep -c 'cannot read CACert')
((n >= 2 && n <= 5))
bm_ok $? "the unreadable CACert is retried with backoff (got $n attempts in ~9 s)"
bm_is "$(conn lateca 2>/dev/null)" 0 "lateca is not connected"
bm_check "a missing CertificateKeyFile: an ERROR naming the option and the file" \
  grep -qF "[error] bimetri plugin: gateway \"latekey\": cannot read CertificateKeyFile \"$T/late/cli.key\"" "$T/collectd.log"
bm_is "$(conn latekey 2>/dev/null)" 0 "latekey is not connected"
mkdir -p "$T/late" && cp "$P/ca.pem" "$LATE_CA" && cp "$P/cli.key" "$T/late/cli.key"
bm_check "once the CACert exists, lateca connects without a restart" bm_wait_for 40 conn_is lateca 1
bm_check "once the key exists, latekey connects without a restart" bm_wait_for 40 conn_is latekey 1

# --- verification off: a WARNING at every connect ------------------------------
warn_re='\[warning\] bimetri plugin: gateway "%s": connecting to 127\.0\.0\.1:[0-9]+ with TLS verification OFF \(%s\)'
# shellcheck disable=SC2059
re_host=$(printf "$warn_re" nohostcheck 'TLSVerifyHostname false')
# shellcheck disable=SC2059
re_peer=$(printf "$warn_re" nopeercheck 'TLSVerifyPeer false')
host1=$(bm_count_log "$T/collectd.log" "$re_host")
peer1=$(bm_count_log "$T/collectd.log" "$re_peer")
bm_is "$host1" 1 "TLSVerifyHostname false: a WARNING at the connect"
bm_is "$peer1" 1 "TLSVerifyPeer false: a WARNING at the connect"
bm_is "$(bm_count_log "$T/collectd.log" 'with TLS verification OFF')" 2 \
  "no other Gateway warns about verification"
bm_restart_broker
bm_check "plant1 reconnects over TLS after a broker restart" bm_wait_for 15 conn_is plant1 1
bm_check "nohostcheck reconnects" bm_wait_for 15 conn_is nohostcheck 1
bm_check "nopeercheck reconnects" bm_wait_for 15 conn_is nopeercheck 1
# At least once more: an attempt made while the broker was down warns too.
(($(bm_count_log "$T/collectd.log" "$re_host") > host1))
bm_ok $? "TLSVerifyHostname false: the WARNING again at the reconnect"
(($(bm_count_log "$T/collectd.log" "$re_peer") > peer1))
bm_ok $? "TLSVerifyPeer false: the WARNING again at the reconnect"

bm_check "collectd is still running" _bm_alive "$COLLECTD_PID"
bm_check "collectd still answers" bm_unixsock LISTVAL
bm_check "the MQTT and key passphrases appear in no log" \
  bash -c "! grep -rqsF -e '$MQTT_PASS' -e '$(<"$P/keypass")' -e not-the-passphrase \
    --exclude='*.conf' --exclude=mqtt-pass --exclude=mqtt-pass-wrong --exclude=keypass \
    --exclude=mosquitto.passwd '$T'"
bm_check "the token appears in no log, output or metric" no_secret_leaked
bm_stop_collectd
bm_is $? 0 "collectd shuts down cleanly"

# --- TLSSystemCAs: the system store, here OpenSSL's SSL_CERT_FILE ---------------
export SSL_CERT_FILE=$P/ca.pem
bm_start_collectd "$(BROKER_PORT=$P_OK plant_conf "TLSSystemCAs true")"
unset SSL_CERT_FILE
bm_check "TLSSystemCAs true: plant1 connects with the CA from the system store" \
  bm_wait_for 10 conn_is plant1 1
bm_stop_collectd

# --- TLS to a port where nobody listens ---------------------------------------
# The refusal must be seen at once, as without TLS, and the gateway thread
# must not spin while the socket reports the error.
from=$(_bm_lines "$T/collectd.log")
bm_start_collectd "$(BROKER_PORT=$P_NONE plant_conf "$CA")"
sleep 1
cpu0=$(awk '{ print $14 + $15 }' "/proc/$COLLECTD_PID/stat")
sleep 5
cpu1=$(awk '{ print $14 + $15 }' "/proc/$COLLECTD_PID/stat")
ticks=$(getconf CLK_TCK)
((cpu1 - cpu0 < ticks))
bm_ok $? "collectd used less than 1 s of CPU in 5 s of refused TLS connects (used $(((cpu1 - cpu0) * 1000 / ticks)) ms)"
n=$(tail -n "+$from" "$T/collectd.log" |
  grep -cE "gateway \"plant1\": .*127\.0\.0\.1:${P_NONE}.*[Cc]onnection refused")
((n > 0))
bm_ok $? "the refused TLS connection is reported as refused within 6 s"
bm_stop_collectd
bm_done
