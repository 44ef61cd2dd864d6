# deps.sh - what the project needs on Debian 12, and how it gets it.
# Sourced by tests/run and contrib/demo.sh; bm_install_deps installs only
# what is missing (apt-get update first), and needs root for that.

BM_DEPS="build-essential autoconf automake libtool pkg-config \
collectd-core collectd-dev libmosquitto-dev mosquitto mosquitto-clients \
libyajl-dev libssl-dev openssl socat valgrind procps clang libclang-rt-14-dev \
prometheus libmicrohttpd12 libprotobuf-c1 curl jq influxdb influxdb-client python3"

bm_install_deps() {
  local missing=() p
  for p in $BM_DEPS; do
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
