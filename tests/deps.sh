# deps.sh - what the project needs on Debian 12, and how it gets it.
# Sourced by tests/run (everything) and contrib/demo.sh (the build and the
# demo's daemons only); bm_install_deps installs only what is missing
# (apt-get update first), and needs root for that.

# Building, and running the demo: compiler, autotools, collectd, the broker.
BM_DEPS_BUILD="build-essential autoconf automake libtool pkg-config \
collectd-core collectd-dev libmosquitto-dev mosquitto mosquitto-clients \
libyajl-dev libssl-dev openssl socat procps"
# The tests on top: valgrind, clang's libFuzzer, the metric pipelines'
# servers (write_prometheus needs libmicrohttpd12 and libprotobuf-c1, and
# the python plugin burst.sh loads libpython3.11, which collectd-core only
# suggests), and the tools the tests use.
BM_DEPS_TEST="valgrind clang libclang-rt-14-dev prometheus libmicrohttpd12 \
libprotobuf-c1 curl jq influxdb influxdb-client python3 debhelper fakeroot \
libpython3.11"
BM_DEPS="$BM_DEPS_BUILD $BM_DEPS_TEST"

# bm_install_deps [PACKAGES...]: installs what is missing of PACKAGES
# (default: $BM_DEPS).
bm_install_deps() {
  local missing=() p
  for p in ${*:-$BM_DEPS}; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
      missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "== installing: ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "error: missing packages and not root: apt-get install ${missing[*]}" >&2
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null &&
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}
