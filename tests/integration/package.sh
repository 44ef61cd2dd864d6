#!/usr/bin/env bash
# The Debian package, end to end: contrib/debian/build builds
# collectd-bimetri from a copy of the source (unit tests included), dpkg -i
# installs it, its files are in place, collectd accepts and runs the
# installed example configuration with the installed plugin (PluginDir
# /usr/lib/collectd) against a loopback broker, and dpkg --purge removes
# every file again.
#
# Slow: a whole package build with the unit tests (the test takes 30 to 60 s
# on an idle 2-CPU machine), so its deadline is BM_TEST_TIMEOUT=900 unless
# set. It installs a package on this machine, so it needs root: without
# root it skips (the only reason it may), and it bails out rather than touch
# a collectd-bimetri already installed. It needs dpkg-dev, debhelper and the
# Build-Depends of contrib/debian/control.
#
# By hand: cd build && top_srcdir=$PWD/.. top_builddir=$PWD \
#   bash ../tests/integration/package.sh

if [[ $(id -u) != 0 ]]; then
  echo "1..0 # SKIP installing a package (dpkg -i) needs root"
  exit 0
fi
BM_TEST_TIMEOUT=${BM_TEST_TIMEOUT:-900}
. "$top_srcdir/tests/integration/plant.sh"
. "$top_srcdir/tests/integration/example_conf.sh"

PKG=collectd-bimetri
PLUGIN=/usr/lib/collectd/bimetri.so
DOC=/usr/share/doc/$PKG

# am_list VARIABLE: the words assigned to VARIABLE (= and +=, with
# continuation lines) in Makefile.am.
am_list() {
  awk -v v="$1" '
    $0 ~ "^" v "[ \t]*\\+?=" { on = 1; sub(/^[^=]*=/, "") }
    on { line = $0; more = sub(/\\$/, "", line); printf "%s ", line; on = more }
  ' "$top_srcdir/Makefile.am" | tr -s ' \t' '\n' | grep -v '^$'
}

# bm_skip DESC: a TAP test point skipped for the reason DESC.
bm_skip() {
  _BM_N=$((_BM_N + 1))
  echo "ok $_BM_N # SKIP $*"
}

for tool in dpkg-buildpackage dpkg-deb dh; do
  command -v "$tool" >/dev/null ||
    bm_bail "$tool is missing: apt-get install dpkg-dev debhelper"
done
if dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null | grep -qv '^not-installed$'; then
  bm_bail "$PKG is installed here already: this test would replace and purge it"
fi
[[ -e $PLUGIN ]] && bm_bail "$PLUGIN exists (make install?): this test would remove it"

# If the test ends early, the package goes anyway; lib.sh's own EXIT trap
# (which stops the daemons and keeps $T on failure) runs after.
installed=0
purge_if_installed() {
  ((installed)) && dpkg --purge "$PKG" >>"$T/dpkg.out" 2>&1
  installed=0
}
lib_exit=$(trap -p EXIT)
lib_exit=${lib_exit#trap -- \'}
lib_exit=${lib_exit%\' EXIT}
# shellcheck disable=SC2064 # lib.sh's command, expanded now on purpose
trap "st=\$?; purge_if_installed; (exit \$st); $lib_exit" EXIT

# ---- Build ----------------------------------------------------------------

start=$EPOCHSECONDS
"$top_srcdir/contrib/debian/build" --outdir "$T/deb" >"$T/build.out" 2>&1
bm_ok $? "contrib/debian/build builds the package from a copy of the source" ||
  bm_bail "no package to test (see $T/build.out and $T/deb/*.build)"
bm_diag "package build: $((EPOCHSECONDS - start)) s"
deb=$(tail -n 1 "$T/build.out")

version=$(sed -n 's/^AC_INIT(\[[^]]*\], *\[\([^]]*\)\].*/\1/p' "$top_srcdir/configure.ac")
bm_is "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)" "$PKG $version" \
  "the package is $PKG at configure.ac's version (contrib/debian/changelog)"
bm_like "$(dpkg-deb -f "$deb" Depends)" 'collectd-core \(>= [0-9.]+\), collectd-core \(<< [0-9.]+\).*libmosquitto1' \
  "it depends on the collectd-core it was built for and the libraries (shlibs)"
bm_check "the unit tests ran in the build" grep -qE '^# PASS: +[1-9]' "$T"/deb/*.build
dpkg-deb -c "$deb" | awk '{ print $NF }' | sed 's|^\./|/|' >"$T/contents"
bm_is "$(grep '\.la$' "$T/contents")" "" "no libtool archive in the package"

# ---- Install --------------------------------------------------------------

dpkg -i "$deb" >"$T/dpkg.out" 2>&1
st=$?
installed=1
bm_ok "$st" "dpkg -i installs it" || bm_bail "the package does not install (see $T/dpkg.out)"

# in_place FILE...: every FILE is a regular file.
in_place() {
  local f st=0
  for f in "$@"; do
    [[ -f $f ]] || { echo "missing: $f"; st=1; }
  done
  return "$st"
}
bm_check "the plugin is $PLUGIN" in_place "$PLUGIN"
bm_is "$(dpkg -S "$PLUGIN" 2>/dev/null | cut -d: -f1)" "$PKG" "owned by the package"
mapfile -t programs < <(am_list bin_PROGRAMS)
bins=("${programs[@]/#//usr/bin/}")
bm_check "the programs are in /usr/bin: ${programs[*]}" in_place "${bins[@]}"
if [[ " ${programs[*]} " == *" bimetri-ctl "* ]]; then
  bm_check "bimetri-ctl is in /usr/bin" in_place /usr/bin/bimetri-ctl
else
  bm_skip "bimetri-ctl: Makefile.am does not build it yet"
fi
mapfile -t mans < <(am_list dist_man_MANS)
man_files=()
for m in "${mans[@]##*/}"; do
  man_files+=("/usr/share/man/man${m##*.}/$m.gz")
done
bm_check "the man pages: ${mans[*]}" in_place "${man_files[@]}"
bm_check "the example configurations in $DOC/examples" \
  in_place "$DOC/examples/collectd.conf.d/bimetri.conf" "$DOC/examples/thresholds.conf"
bm_check "the installed programs find their libraries" \
  bash -c "! ldd $PLUGIN ${bins[*]} | grep 'not found'"
for b in "${bins[@]}"; do
  bm_check "the installed $b runs (--help)" "$b" --help
done

# ---- The installed plugin runs the installed example -----------------------

GWSIM=/usr/bin/bimetri-gwsim plant_token
chmod 600 "$T/token"
bm_start_broker
bm_sub_start resource/commands 2
# The globals of every test (Hostname testhost, BaseDir $T, logfile, unixsock,
# csv), but the plugins are the installed ones.
bm_write_collectd_conf "$(example_conf "$DOC/examples/collectd.conf.d/bimetri.conf")
$(example_conf "$DOC/examples/thresholds.conf")"
sed -i "s|^PluginDir .*|PluginDir \"/usr/lib/collectd\"|" "$T/collectd.conf"
grep -qx 'PluginDir "/usr/lib/collectd"' "$T/collectd.conf" ||
  bm_bail "cannot point PluginDir at /usr/lib/collectd in $T/collectd.conf"

# collectd -t would be the check, but Debian 12's collectd 5.12 exits 0 from
# -t without reading the file (collectd issue #3216); -T reads it, runs the
# plugins' init and one read, and fails on a configuration error.
sed 's/OnFailure 1/OnFailure 7/' "$T/collectd.conf" >"$T/broken.conf"
bm_check "collectd -T refuses a broken copy (the check can fail)" \
  bash -c "! collectd -T -C '$T/broken.conf'"
bm_check "collectd -T accepts the example with the installed plugin" \
  collectd -T -C "$T/collectd.conf"

bm_restart_collectd
bm_check "collectd runs the installed $PLUGIN" grep -q " $PLUGIN\$" "/proc/$COLLECTD_PID/maps"
bm_check "current_connections is 1" wait_val current_connections 1 10
bm_notify failure sensors temperature "" "too hot"
bm_check "a FAILURE for sensors/temperature publishes the pump's command" \
  bm_wait_log "$SUB_LOG" '"command":"setExtDO".*"resourceId":101,"output":4,"status":1' 10
bm_stop_collectd
bm_ok $? "collectd stops cleanly"

# ---- Purge ----------------------------------------------------------------

dpkg --purge "$PKG" >>"$T/dpkg.out" 2>&1
bm_ok $? "dpkg --purge removes it"
installed=0
bm_is "$(dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null || echo not-installed)" \
  not-installed "the package is gone"
left=$(while read -r f; do [[ -f $f || -L $f ]] && echo "$f"; done <"$T/contents")
bm_is "$left" "" "none of its files is left"
bm_done
