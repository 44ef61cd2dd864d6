#!/usr/bin/env bash
# demo.sh - the collectd-bimetri demo on loopback.
#
# Starts a mosquitto broker, the gateway simulator and collectd with the
# plugin, each on a free loopback port and in a temporary directory.  A
# synthetic temperature (PUTVAL through unixsock) rises past the threshold
# plugin's FailureMax and falls back; the Trigger switches the relay on and
# off, and the terminal shows commands, responses and the confirmed state.
# Everything it starts is stopped when it ends (or on Ctrl-C).
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
build=${BM_BUILD_DIR:-$here/build}
# shellcheck source=tests/deps.sh
. "$here/tests/deps.sh"
bm_install_deps $BM_DEPS_BUILD

if [ ! -x "$build/bimetri-gwsim" ] || [ ! -f "$build/.libs/bimetri.so" ]; then
  echo "== building"
  (cd "$here" && autoreconf -fi >/dev/null 2>&1)
  mkdir -p "$build"
  (cd "$build" && "$here/configure" -q && make -s -j2) >/dev/null
fi

T=$(mktemp -d /tmp/bimetri-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT INT TERM

[ -x "$build/tests/freeport" ] || (cd "$build" && make -s tests/freeport >/dev/null)
port=$("$build/tests/freeport")

# Broker
cat > "$T/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
EOF
timeout 300 mosquitto -c "$T/mosquitto.conf" >"$T/mosquitto.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

# Gateway simulator, with a shared HS256 secret and a token signed with it
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/secret"
"$build/bimetri-gwsim" --secret-file "$T/secret" --print-token 86400 >"$T/token"
chmod 600 "$T/secret" "$T/token"
timeout 300 "$build/bimetri-gwsim" -p "$port" --secret-file "$T/secret" \
  --delay 500 -v --log "$T/gwsim.log" 2>&1 | sed -u 's/^/  gateway   | /' &
pids+=($!)

# collectd with the plugin, the threshold plugin and a Trigger
mkdir -p "$T/plugins"
for p in logfile unixsock threshold; do
  ln "/usr/lib/collectd/$p.so" "$T/plugins/" 2>/dev/null ||
    cp "/usr/lib/collectd/$p.so" "$T/plugins/"
done
cp "$build/.libs/bimetri.so" "$T/plugins/"
cat > "$T/collectd.conf" <<EOF
Hostname "demohost"
FQDNLookup false
Interval 1
BaseDir "$T"
PIDFile "$T/collectd.pid"
PluginDir "$T/plugins"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File "$T/collectd.log"
</Plugin>
LoadPlugin unixsock
<Plugin unixsock>
  SocketFile "$T/collectd.sock"
</Plugin>
LoadPlugin threshold
<Plugin threshold>
  <Plugin "room">
    <Type "temperature">
      FailureMax 70
    </Type>
  </Plugin>
</Plugin>
LoadPlugin bimetri
<Plugin bimetri>
  <Gateway "plant1">
    Host "127.0.0.1"
    Port $port
    AppName "flexyWattApp"
    InstanceId "1"
    UserId 12345
    OrganizationId 23456
    TokenFile "$T/token"
    <Relay "pump">
      ResourceId 101
      Output 4
    </Relay>
  </Gateway>
  <Trigger "overheat">
    Relay "plant1" "pump"
    Plugin "room"
    Type "temperature"
    OnFailure 1
    OnOkay 0
  </Trigger>
</Plugin>
EOF
timeout 300 collectd -f -C "$T/collectd.conf" >"$T/collectd.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$T/collectd.sock" ] && break; sleep 0.1; done
touch "$T/collectd.log"
tail -n +1 -F "$T/collectd.log" 2>/dev/null |
  grep --line-buffered -E 'bimetri plugin|Notification: .*plugin = (bimetri|room)' |
  sed -u -e 's/^\[[^]]*\] //' -e 's/^/  collectd  | /' &
pids+=($!)

sock() { printf '%s\n' "$1" | socat - "UNIX-CONNECT:$T/collectd.sock"; }
state() {
  case $(sock 'GETVAL "demohost/bimetri-plant1/bool-pump"' 2>/dev/null |
    sed -n 's/^value=\(.*\)/\1/p') in
  1.000000e+00) echo on ;;
  0.000000e+00) echo off ;;
  *) echo unknown ;;
  esac
}

echo "== temperature rises past 70 (the threshold plugin's FailureMax)"
for t in 60 64 68 72 76 78; do
  echo "  room      | temperature $t"
  sock "PUTVAL \"demohost/room/temperature\" interval=1 N:$t" >/dev/null
  sleep 1
done
sleep 2
echo "== pump relay state (bool-pump): $(state)"
echo "== temperature falls back"
for t in 74 69 65 62 60; do
  echo "  room      | temperature $t"
  sock "PUTVAL \"demohost/room/temperature\" interval=1 N:$t" >/dev/null
  sleep 1
done
sleep 2
echo "== pump relay state (bool-pump): $(state)"
echo "== done; the gateway simulator's log:"
sed 's/^/  /' "$T/gwsim.log"
