#!/usr/bin/env bash
# Many relays (3,000 besides the pump and the fan: 3 slices) under the
# plugin's own Interval 3: each read (one a second, from the first one at
# start) sends a third of the relays, so that collectd's write queue never
# holds all of them at once, and each relay's values still go out every
# 3 s, which collectd's cache keeps in between.
. "$top_srcdir/tests/integration/plant.sh"

relays() {
  for ((i = 0; i < 3000; i++)); do
    printf '<Relay "r%d">\n ResourceId %d\n Output %d\n</Relay>\n' \
      "$i" $((1000 + i / 16)) $((1 + i % 16))
  done
}

# The update times LISTVAL shows for every pending_operations value.
update_times() {
  bm_unixsock LISTVAL | awk '/bimetri-plant1\/pending_operations-/ { print $1 }'
}

# The number of groups those times form (gaps over 0.5 s between groups),
# and the span from the oldest to the newest, as "GROUPS SPAN".
time_groups() {
  update_times | sort -g | awk 'NR == 1 { first = $1; g = 1 }
    NR > 1 && $1 - p > 0.5 { g++ }
    { p = $1 }
    END { printf "%d %.1f\n", g, p - first }'
}

plant_start_interval 3 "$(relays)"
bm_check "connected" bm_wait_for 10 val_is current_connections 1
bm_check "every relay has its values" \
  bm_wait_for 10 eval '[[ $(update_times | wc -l) -eq 3002 ]]'

# Every read sends its own slice: the values' update times form 3 groups,
# about a second apart.
sleep 4
groups=$(time_groups)
bm_is "${groups% *}" 3 "the relays' values were sent by 3 reads ($groups)"
bm_ok "$(awk '{ exit !($2 >= 1.5 && $2 <= 2.5) }' <<<"$groups" && echo 0 || echo 1)" \
  "a second apart: 2 s from the oldest to the newest ($groups)"

# Each relay's value still goes out every 3 s, and stays in the cache.
gone=$(absent_from_cache 24 pending_operations-r0 pending_operations-r1500 \
  pending_operations-r2999 pending_operations-fan)
bm_is "$gone" 0 "the values stay in collectd's cache between their reads (96 GETVALs)"
# From the start on: the first csv row of a relay of the last slice came 2
# reads after the first row of a relay of the first slice.
first_r0=$(csv_first pending_operations-r0)
first_r2999=$(csv_first pending_operations-r2999)
bm_ok "$(awk -v a="$first_r0" -v b="$first_r2999" 'BEGIN { d = b - a; exit !(a > 0 && d > 1.5 && d < 2.5) }' && echo 0 || echo 1)" \
  "the reads are sliced from the first on (r0 at $first_r0, r2999 at $first_r2999)"
# r999 | r1000 and r2000 | r2001 are the slices' edges (3,002 relays in 3).
for m in pending_operations-r0 pending_operations-r999 pending_operations-r1000 \
  pending_operations-r2000 pending_operations-r2001 pending_operations-fan \
  timestamp-token_expiry; do
  gaps=$(csv_gaps "$m")
  bm_ok "$(gaps_within "$gaps" 2.5 3.5 && echo 0 || echo 1)" \
    "$m is sent every 3 s ($(tr '\n' ' ' <<<"$gaps"))"
done
bm_is "$(count "$T/collectd.log" 'bimetri.*([Mm]issing|has not been updated)')" 0 \
  "no value of the plugin is reported missing"
bm_check "the token appears in no log, output or metric" no_secret_leaked
bm_done
