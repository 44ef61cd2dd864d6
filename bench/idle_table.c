/*
 * idle_table.c - the peer of bench/idle.sh's memory per relay: the relay
 * tables alone, outside collectd.
 *
 *   idle_table GATEWAYS RELAYS
 *
 * Resident memory (/proc/self/statm) grown by GATEWAYS bm_relay_table_new
 * + RELAYS bm_relay_table_add each, with bench/idle.sh's relays (names
 * "relay-<i>" (%05d), ResourceId 1000 + i / 16, Output 1 + i % 16) and
 * the plugin's default policy, divided by GATEWAYS * RELAYS.  Prints that
 * number of bytes.  Exit status 0, or 1 with a message.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "relay.h"

static long rss_bytes(void)
{
  long size = 0, rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");

  if (!f || fscanf(f, "%ld %ld", &size, &rss) != 2) {
    fprintf(stderr, "idle_table: cannot read /proc/self/statm\n");
    exit(1);
  }
  fclose(f);
  return rss * sysconf(_SC_PAGESIZE);
}

int main(int argc, char **argv)
{
  /* AckTimeout, CommandTimeout, Retries, RetryBackoff,
   * MaxCommandsPerMinute: the plugin's defaults. */
  struct bm_relay_policy pol = {.ack_timeout = 10, .command_timeout = 30,
                                .retries = 2, .retry_backoff = 1,
                                .max_per_minute = 10};
  char name[64], prefix[17];
  long relays, before;
  int gateways;

  if (argc != 3) {
    fprintf(stderr, "usage: idle_table GATEWAYS RELAYS\n");
    return 2;
  }
  gateways = atoi(argv[1]);
  relays = atol(argv[2]);
  if (gateways < 1 || gateways > 99 || relays < 1 || relays > 1000000) {
    fprintf(stderr, "idle_table: 1..99 gateways of 1..1000000 relays\n");
    return 2;
  }
  before = rss_bytes();
  for (int g = 1; g <= gateways; g++) {
    bm_relay_table_t *t;

    snprintf(prefix, sizeof(prefix), "00c0ffee%08x", (unsigned)g);
    if (!(t = bm_relay_table_new(&pol, prefix))) {
      fprintf(stderr, "idle_table: out of memory\n");
      return 1;
    }
    for (long i = 0; i < relays; i++) {
      snprintf(name, sizeof(name), "relay-%05ld", i);
      if (bm_relay_table_add(t, name, 1000 + i / 16, (int)(1 + i % 16)) < 0) {
        fprintf(stderr, "idle_table: bm_relay_table_add failed\n");
        return 1;
      }
    }
    /* Kept to the end: the tables' memory is what is measured. */
  }
  printf("%.6g\n", (double)(rss_bytes() - before) / ((double)gateways * relays));
  return 0;
}
