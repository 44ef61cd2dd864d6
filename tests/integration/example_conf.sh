# example_conf.sh - the shipped example configurations, adapted to a test;
# sourced after lib.sh by examples.sh and package.sh.
#
# contrib/collectd.conf.d/bimetri.conf and contrib/thresholds.conf are what
# users copy; the tests run them as they are but for the site: the broker
# is the test's (127.0.0.1:$BROKER_PORT), the token is $T/token, and every
# file under /etc/collectd/ or /var/lib/collectd/ is under $T instead.
#
# The example's conventions, which the variants below rely on:
#   "#Option value"      an option left commented out (at its default),
#   "#  Option value"    the same inside a commented-out block,
#   "# text"             an explanation (one space after the "#").

# example_conf FILE: prints FILE adapted to this test.
example_conf() {
  sed -E -e "s|^( *)Host \"localhost\"|\1Host \"127.0.0.1\"|" \
    -e "s|^( *)#Port 1883|\1Port $BROKER_PORT|" \
    -e "s|/etc/collectd/bimetri-plant1\.jwt|$T/token|g" \
    -e "s|/etc/collectd/|$T/etc/|g" \
    -e "s|/var/lib/collectd/|$T/|g" "$1"
}

# example_uncomment: stdin to stdout with every commented-out option and
# block of the first level switched on (the explanations stay comments, and
# so do options commented out inside a commented-out block).
example_uncomment() {
  sed -E 's/^( *)#((  +)?[A-Z<])/\1\2/'
}

# example_drop KEY...: stdin to stdout without the options named KEY (whole
# lines whose first word is KEY) and, for a KEY written as <Block>, without
# that block.
example_drop() {
  local key script=
  for key in "$@"; do
    if [[ $key == \<*\> ]]; then
      key=${key#<}
      key=${key%>}
      script+="/^ *<$key( |>)/,/^ *<\\/$key>/d;"
    else
      script+="/^ *$key( |\$)/d;"
    fi
  done
  sed -E "$script"
}

# example_files: creates the files the example names besides the token,
# under $T/etc (mode 0600 for secrets, as the plugin wants them): the MQTT
# password, the client key's passphrase, and an ES256 key for <Token>.
example_files() {
  mkdir -p "$T/etc" || return 1
  (
    umask 077
    echo "mqtt-password" >"$T/etc/bimetri-plant1.password" &&
      echo "key-passphrase" >"$T/etc/bimetri-plant1.keypass" &&
      openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -out "$T/etc/bimetri-plant1-key.pem" 2>/dev/null
  )
}
