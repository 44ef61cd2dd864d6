/*
 * bm_count.c - a collectd write plugin for the benchmarks: counts the
 * values that reach collectd's write path, per plugin and type, into a
 * small file the benchmark maps, so that it knows when N values were
 * dispatched, and when the last of them arrived, without polling a log.
 *
 *   LoadPlugin bm_count
 *   <Plugin bm_count>
 *     Count "bimetri" "bool" "/tmp/x/ours.count"
 *     Count "mqttpeer" "gauge" "/tmp/x/mqtt.count"
 *   </Plugin>
 *
 * Each file holds one struct bm_count_file (see bench/bm_count.h): the
 * number of matching values written so far and the CLOCK_REALTIME of the
 * last, updated in place (shared mapping). Values of other plugins or
 * types are looked at and ignored, as any write plugin does.
 *
 *   <Plugin bm_count>
 *     Log "/tmp/x/collectd.log"
 *   </Plugin>
 *
 * also makes it a log plugin standing for the one Debian's collectd.conf
 * loads, syslog at LogLevel info: lines up to info are written (to one
 * file kept open, a write each), notifications are not (syslog's
 * NotifyLevel default logs none). A syslog daemon is not on every machine;
 * the benchmarks read the lines.
 *
 *     Values 10 10000 1
 *
 * also makes it a read plugin dispatching, every interval, the values the
 * bimetri plugin dispatches for that many Gateways and Relays with their
 * states known (1) or unknown (0): for each Relay "relay-<5 digits>" of
 * each Gateway "gw<2 digits>", bimetri-gwNN/pending_operations-relay-N
 * (and bimetri-gwNN/bool-relay-N when known), the way bimetri.c does, and
 * nothing else: what collectd costs for those values alone.
 *
 *     Values 10 10000 1 600 10
 *
 * spreads them the way bimetri.c does with a StateInterval (SLICES READS):
 * READS reads per interval, each dispatching the next of SLICES parts of
 * every Gateway's relays, every value carrying the time its relay's turn
 * comes back (SLICES reads) as its interval; the first READS reads, like
 * bimetri.c's first round, dispatch every relay once (READS parts).
 */
#include "bm_count.h"
#include "str.h" /* src/: bm_str_copy, as bimetri.c copies its names */

#include <collectd/core/daemon/plugin.h>
#include <collectd/core/utils/common/common.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MAX_COUNTS 8

struct counter {
  char plugin[DATA_MAX_NAME_LEN];
  char type[DATA_MAX_NAME_LEN];
  struct bm_count_file *file;
};

static struct counter counters[MAX_COUNTS];
static int counters_n;
static int log_fd = -1;
static int values_gateways, values_relays, values_known;
static unsigned values_slices = 1, values_reads = 1, values_turn;

static void dispatch_one(const char *gateway, const char *type,
                         const char *relay, gauge_t value, cdtime_t interval)
{
  value_list_t vl = VALUE_LIST_INIT;
  value_t v = {.gauge = value};

  vl.values = &v;
  vl.values_len = 1;
  vl.interval = interval;
  /* vl is zeroed: sstrncpy's strncpy would pad each 128-byte field. */
  bm_str_copy(vl.plugin, sizeof(vl.plugin), "bimetri");
  bm_str_copy(vl.plugin_instance, sizeof(vl.plugin_instance), gateway);
  bm_str_copy(vl.type, sizeof(vl.type), type);
  bm_str_copy(vl.type_instance, sizeof(vl.type_instance), relay);
  plugin_dispatch_values(&vl);
}

/* One read: the next slice of every gateway's relays. */
static int values_read(user_data_t *ud)
{
  char gateway[16], relay[32];
  unsigned turn = values_turn++, slices = values_reads, slice = turn;
  /* This read's interval is the plugin's over READS. */
  cdtime_t interval = plugin_get_interval() * values_slices;

  if (turn >= values_reads) { /* after the first round */
    slices = values_slices;
    slice = (turn - values_reads) % values_slices;
  }

  (void)ud;
  for (int g = 1; g <= values_gateways; g++) {
    int first = (int)((long)values_relays * slice / slices);
    int end = (int)((long)values_relays * (slice + 1) / slices);

    snprintf(gateway, sizeof(gateway), "gw%02d", g);
    for (int i = first; i < end; i++) {
      snprintf(relay, sizeof(relay), "relay-%05d", i);
      if (values_known)
        dispatch_one(gateway, "bool", relay, i % 2, interval);
      dispatch_one(gateway, "pending_operations", relay, 0, interval);
    }
  }
  return 0;
}

/* The read, READS times per interval, registered once the plugin's
 * interval is known. */
static int values_init(void)
{
  return plugin_register_complex_read(NULL, "bm_count", values_read,
                                      plugin_get_interval() / values_reads,
                                      NULL);
}

static bool number_at_least(const oconfig_item_t *c, int i, double min)
{
  return c->values[i].type == OCONFIG_TYPE_NUMBER &&
         c->values[i].value.number >= min;
}

static int values_config(oconfig_item_t *c)
{
  if ((c->values_num != 3 && c->values_num != 5) || !number_at_least(c, 0, 1) ||
      !number_at_least(c, 1, 1) || !number_at_least(c, 2, 0) ||
      (c->values_num == 5 &&
       (!number_at_least(c, 3, 1) || !number_at_least(c, 4, 1)))) {
    ERROR("bm_count plugin: expected: Values GATEWAYS RELAYS KNOWN(0|1) "
          "[SLICES READS]");
    return -1;
  }
  values_gateways = (int)c->values[0].value.number;
  values_relays = (int)c->values[1].value.number;
  values_known = c->values[2].value.number != 0;
  if (c->values_num == 5) {
    values_slices = (unsigned)c->values[3].value.number;
    values_reads = (unsigned)c->values[4].value.number;
  }
  return plugin_register_init("bm_count", values_init);
}

static void count_log(int severity, const char *msg, user_data_t *ud)
{
  char line[1200];
  int n;

  (void)ud;
  if (severity > LOG_INFO)
    return;
  n = snprintf(line, sizeof(line), "[%.3f] %s\n",
               CDTIME_T_TO_DOUBLE(cdtime()), msg);
  if (n > (int)sizeof(line) - 1)
    n = (int)sizeof(line) - 1;
  /* O_APPEND: one write a line; a failure has nowhere to be said. */
  ssize_t written = write(log_fd, line, (size_t)n);
  (void)written;
}

static int log_config(oconfig_item_t *c)
{
  if (c->values_num != 1 || c->values[0].type != OCONFIG_TYPE_STRING) {
    ERROR("bm_count plugin: expected: Log \"file\"");
    return -1;
  }
  if (log_fd >= 0) {
    ERROR("bm_count plugin: one Log line at most");
    return -1;
  }
  log_fd = open(c->values[0].value.string,
                O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    ERROR("bm_count plugin: %s: %s", c->values[0].value.string, STRERRNO);
    return -1;
  }
  plugin_register_log("bm_count", count_log, NULL);
  return 0;
}

static int count_config(oconfig_item_t *ci)
{
  for (int i = 0; i < ci->children_num; i++) {
    oconfig_item_t *c = ci->children + i;
    struct counter *k;
    int fd;

    if (strcasecmp(c->key, "Log") == 0) {
      if (log_config(c) != 0)
        return -1;
      continue;
    }
    if (strcasecmp(c->key, "Values") == 0) {
      if (values_config(c) != 0)
        return -1;
      continue;
    }
    if (strcasecmp(c->key, "Count") != 0 || c->values_num != 3 ||
        c->values[0].type != OCONFIG_TYPE_STRING ||
        c->values[1].type != OCONFIG_TYPE_STRING ||
        c->values[2].type != OCONFIG_TYPE_STRING) {
      ERROR("bm_count plugin: expected: Count \"plugin\" \"type\" \"file\" "
            "or Log \"file\"");
      return -1;
    }
    if (counters_n == MAX_COUNTS) {
      ERROR("bm_count plugin: at most %d Count lines", MAX_COUNTS);
      return -1;
    }
    k = &counters[counters_n];
    sstrncpy(k->plugin, c->values[0].value.string, sizeof(k->plugin));
    sstrncpy(k->type, c->values[1].value.string, sizeof(k->type));
    fd = open(c->values[2].value.string, O_RDWR | O_CREAT, 0644);
    if (fd < 0 || ftruncate(fd, sizeof(struct bm_count_file)) != 0) {
      ERROR("bm_count plugin: %s: %s", c->values[2].value.string, STRERRNO);
      if (fd >= 0)
        close(fd);
      return -1;
    }
    k->file = mmap(NULL, sizeof(struct bm_count_file), PROT_READ | PROT_WRITE,
                   MAP_SHARED, fd, 0);
    close(fd);
    if (k->file == MAP_FAILED) {
      ERROR("bm_count plugin: mmap: %s", STRERRNO);
      return -1;
    }
    counters_n++;
  }
  return 0;
}

static int count_write(const data_set_t *ds, const value_list_t *vl,
                       user_data_t *ud)
{
  (void)ds;
  (void)ud;
  for (int i = 0; i < counters_n; i++) {
    struct counter *k = &counters[i];
    struct timespec ts;

    if (strcmp(vl->plugin, k->plugin) != 0 || strcmp(vl->type, k->type) != 0)
      continue;
    clock_gettime(CLOCK_REALTIME, &ts);
    atomic_store(&k->file->last_ns,
                 (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec);
    atomic_fetch_add(&k->file->count, 1);
  }
  return 0;
}

void module_register(void)
{
  plugin_register_complex_config("bm_count", count_config);
  plugin_register_write("bm_count", count_write, NULL);
}
