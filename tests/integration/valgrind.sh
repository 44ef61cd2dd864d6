#!/usr/bin/env bash
# Shutdown is clean: collectd with the plugin, under valgrind's memcheck,
# runs a command round trip and stops; no invalid access anywhere, and
# nothing definitely lost in the plugin's code.
BM_TEST_TIMEOUT=${BM_TEST_TIMEOUT:-240}
. "$top_srcdir/tests/integration/plant.sh"

bm_plugin_is_asan && bm_skip_all "valgrind cannot run an ASan-built plugin; the build without sanitizers runs this test"

plant_token
bm_start_broker
bm_start_gwsim --secret-file "$T/secret" --delay 100
BM_COLLECTD_WRAPPER="valgrind --leak-check=full --show-leak-kinds=definite --track-fds=no --log-file=$T/valgrind.log"
bm_start_collectd "$(plant_conf '' '<Switch "fan-cooling">
    Relay "plant1" "fan"
    Plugin "sensors"
    Type "temperature"
    TypeInstance "room"
    OnAbove 70
    OffBelow 60
  </Switch>')"
bm_check "collectd under valgrind connects" bm_wait_for 60 val_is current_connections 1
bm_notify failure sensors temperature "" "too hot"
bm_check "a command round trip" wait_val bool-pump 1 30
bm_unixsock "PUTVAL \"testhost/sensors/temperature-room\" interval=1 N:80" >/dev/null
bm_check "a Switch round trip" wait_val bool-fan 1 30
bm_stop_collectd
bm_is $? 0 "collectd stops cleanly under valgrind"
bm_check "valgrind saw no invalid read, write or free" bash -c \
  "! grep -qE 'Invalid (read|write|free)|uninitialised|Mismatched free' '$T/valgrind.log'"
# Frames of our code in a definite leak report: the plugin's own files.
ours=$(awk '/definitely lost in/ { on = 1 } on && /^==[0-9]+== *$/ { on = 0 } on' "$T/valgrind.log" |
  grep -cE '\((bimetri|gateway|relay|journal|token|rule|match|message|jwt|idmap|alloc|crc32c|log)\.c:' || true)
bm_is "$ours" 0 "nothing definitely lost in the plugin's code"
bm_check "nothing definitely lost at all, and no error" bash -c \
  "grep -qE 'definitely lost: 0 bytes|All heap blocks were freed' '$T/valgrind.log' && grep -qE 'ERROR SUMMARY: 0 errors' '$T/valgrind.log'"
bm_diag "$(grep -E 'definitely lost|ERROR SUMMARY' "$T/valgrind.log" | tail -2 | tr '\n' ' ')"
bm_done
