/*
 * writepath_load.c - a collectd plugin for bench/writepath.sh: dispatches
 * values as fast as collectd's write path takes them, on a signal, so that
 * the benchmark can time the write path with and without bimetri loaded.
 *
 *   LoadPlugin writepath_load
 *   <Plugin writepath_load>
 *     Values 262144          # per run; a multiple of 4096
 *     Threads 2              # dispatching threads: 1, 2, 4 or 8
 *     Window 5000            # values in flight at most (see below)
 *     GoDir "/tmp/x/cfg"     # run n starts when GoDir/go-<n> appears
 *     CountFile "/tmp/x/cfg/cpu-cpu.count"   # bench/bm_count.c's files
 *     CountFile ...
 *   </Plugin>
 *
 * The values: 4096 identifiers, those of 64 ordinary hosts ("node-001" ..
 * "node-064", as a collectd server receiving from its fleet would see
 * them) with 64 metrics each, 8 of each of 8 (plugin, type) groups, so
 * that 8 Count lines of bench/bm_count.c see them all (each group gets
 * Values / 8 per run):
 *
 *   cpu-0|1/cpu-user|system|idle|wait                 DERIVE
 *   df-root|boot|var|home/df_complex-used|free        GAUGE
 *   interface-eth0..wg0/if_octets, if_packets         2 x DERIVE
 *   disk-sda..vdb/disk_octets                         2 x DERIVE
 *   sensors-coretemp-isa-0000/temperature-temp1..8    GAUGE
 *   memory/memory-used|buffered|...|available         GAUGE
 *   processes-sshd|nginx|.../ps_rss                   GAUGE
 *
 * Many identifiers, because collectd's write threads (5 by default) may
 * reorder values: a value of an identifier that reaches the cache after a
 * newer one of the same identifier is "too old" (a NOTICE in the log).
 * With 4096 identifiers two values of one identifier are 4096 apart in the
 * queue, and that stays rare (the benchmark counts those notices).
 *
 * Threads: thread j dispatches the identifiers j, j + Threads, ... round
 * robin, Values / Threads values per run.  An identifier belongs to one
 * thread, so its values are enqueued in time order (collectd stamps them
 * in plugin_dispatch_values).
 *
 * Runs (bench/writepath.sh's slices): thread 0 polls for GoDir/go-<n>
 * (n = 0, 1, ...) every 5 ms, the others sleep on a barrier.  When it
 * appears, thread 0 reads CLOCK_REALTIME (t0, before any value of the run
 * is dispatched) and releases the others; when every thread has
 * dispatched its share, thread 0 writes "<t0 ns> <end ns>\n" to
 * GoDir/start-<n> (written to a temporary name and renamed, so the reader
 * never sees half of it).
 *
 * Window: plugin_dispatch_values only queues a copy of the value for the
 * write threads, so an unthrottled loop would queue millions of copies
 * faster than they are written.  Instead the threads keep at most about
 * Window values in flight: dispatched, but not yet seen by bm_count (the
 * sum of the CountFiles, which bm_count updates in its write callback).
 * The queue never runs dry, so the write threads are never idle while a
 * run lasts, and its memory stays bounded.
 */
#include "bm_count.h"

#include <collectd/core/daemon/plugin.h>
#include <collectd/core/utils/common/common.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LOAD_GROUPS 8    /* (plugin, type) pairs: bm_count's Count lines */
#define LOAD_PER_HOST 64 /* identifiers per host: 8 per group */
#define LOAD_HOSTS 64
#define LOAD_IDS (LOAD_HOSTS * LOAD_PER_HOST)
#define LOAD_MAX_THREADS 8
#define LOAD_MAX_COUNTS 8
#define LOAD_CHECK_EVERY 128 /* values between two looks at the window */

struct load_id {
  const char *host, *plugin, *plugin_instance, *type, *type_instance;
  int ds_num;      /* 1 or 2 */
  bool derive;     /* DERIVE values (increasing), else GAUGE */
};

static struct load_id load_ids[LOAD_IDS];

static long long load_values = 262144;
static int load_threads_n = 2;
static long long load_window = 5000;
static char load_go_dir[1024];
static struct bm_count_file *load_counts[LOAD_MAX_COUNTS];
static int load_counts_n;

static pthread_t load_threads[LOAD_MAX_THREADS];
static int load_started;
static pthread_barrier_t load_barrier;
static atomic_bool load_stop;
static _Atomic long long load_dispatched; /* every run, every thread */

/* ---- the identifiers --------------------------------------------------- */

/* The names, built once at init; load_ids points into them. */
static char load_host[LOAD_HOSTS][DATA_MAX_NAME_LEN];
static char load_pi[LOAD_PER_HOST][DATA_MAX_NAME_LEN];
static char load_ti[LOAD_PER_HOST][DATA_MAX_NAME_LEN];

static void load_ids_init(void)
{
  static const char *cpu_states[] = {"user", "system", "idle", "wait"};
  static const char *df_mounts[] = {"root", "boot", "var", "home"};
  static const char *ifs[] = {"eth0", "eth1", "eth2", "eth3",
                              "lo",   "br0",  "docker0", "wg0"};
  static const char *disks[] = {"sda",     "sdb",     "sdc", "sdd",
                                "nvme0n1", "nvme1n1", "vda", "vdb"};
  static const char *mem_states[] = {"used",      "buffered",  "cached",
                                     "free",      "slab_recl", "slab_unrecl",
                                     "shared",    "available"};
  static const char *ps[] = {"sshd",  "nginx",   "postgres", "redis",
                             "java",  "chronyd", "dockerd",  "collectd"};
  static const struct {
    const char *plugin, *type;
    int ds_num;
    bool derive;
  } groups[LOAD_GROUPS] = {
      {"cpu", "cpu", 1, true},
      {"df", "df_complex", 1, false},
      {"interface", "if_octets", 2, true},
      {"interface", "if_packets", 2, true},
      {"disk", "disk_octets", 2, true},
      {"sensors", "temperature", 1, false},
      {"memory", "memory", 1, false},
      {"processes", "ps_rss", 1, false},
  };

  /* One host's metrics: 8 of each group. */
  for (int g = 0; g < LOAD_GROUPS; g++) {
    for (int i = 0; i < 8; i++) {
      int m = g * 8 + i;
      char *pi = load_pi[m], *ti = load_ti[m];
      size_t size = DATA_MAX_NAME_LEN;

      switch (g) {
      case 0: /* cpu-0|1/cpu-user|system|idle|wait */
        snprintf(pi, size, "%d", i / 4);
        snprintf(ti, size, "%s", cpu_states[i % 4]);
        break;
      case 1: /* df-<mount>/df_complex-used|free */
        snprintf(pi, size, "%s", df_mounts[i / 2]);
        snprintf(ti, size, "%s", i % 2 ? "free" : "used");
        break;
      case 2: /* interface-<if>/if_octets, if_packets */
      case 3:
        snprintf(pi, size, "%s", ifs[i]);
        break;
      case 4: /* disk-<dev>/disk_octets */
        snprintf(pi, size, "%s", disks[i]);
        break;
      case 5: /* sensors-coretemp-isa-0000/temperature-temp<n> */
        snprintf(pi, size, "coretemp-isa-0000");
        snprintf(ti, size, "temp%d", 1 + i);
        break;
      case 6: /* memory/memory-<state> */
        snprintf(ti, size, "%s", mem_states[i]);
        break;
      default: /* processes-<name>/ps_rss */
        snprintf(pi, size, "%s", ps[i]);
        break;
      }
    }
  }
  for (int h = 0; h < LOAD_HOSTS; h++) {
    snprintf(load_host[h], sizeof(load_host[h]), "node-%03d", h + 1);
    for (int m = 0; m < LOAD_PER_HOST; m++) {
      int g = m / 8;
      load_ids[h * LOAD_PER_HOST + m] = (struct load_id){
          load_host[h],    groups[g].plugin,  load_pi[m],
          groups[g].type,  load_ti[m],        groups[g].ds_num,
          groups[g].derive};
    }
  }
}

/* ---- configuration ----------------------------------------------------- */

static int load_config_number(oconfig_item_t *c, long long lo, long long hi,
                              long long *out)
{
  if (c->values_num != 1 || c->values[0].type != OCONFIG_TYPE_NUMBER ||
      c->values[0].value.number < lo || c->values[0].value.number > hi) {
    ERROR("writepath_load plugin: \"%s\" expects a number from %lld to %lld",
          c->key, lo, hi);
    return -1;
  }
  *out = (long long)c->values[0].value.number;
  return 0;
}

static int load_map_count(const char *path)
{
  int fd;
  void *p;

  if (load_counts_n == LOAD_MAX_COUNTS) {
    ERROR("writepath_load plugin: at most %d CountFile lines", LOAD_MAX_COUNTS);
    return -1;
  }
  /* bm_count creates the file in its config callback; ours may come first. */
  fd = open(path, O_RDWR | O_CREAT, 0644);
  if (fd < 0 || ftruncate(fd, sizeof(struct bm_count_file)) != 0) {
    ERROR("writepath_load plugin: \"%s\": %s", path, STRERRNO);
    if (fd >= 0)
      close(fd);
    return -1;
  }
  p = mmap(NULL, sizeof(struct bm_count_file), PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) {
    ERROR("writepath_load plugin: mmap \"%s\": %s", path, STRERRNO);
    return -1;
  }
  load_counts[load_counts_n++] = p;
  return 0;
}

static int load_config(oconfig_item_t *ci)
{
  for (int i = 0; i < ci->children_num; i++) {
    oconfig_item_t *c = ci->children + i;
    long long n = 0;
    int status = 0;

    if (strcasecmp(c->key, "Values") == 0) {
      status = load_config_number(c, LOAD_IDS, 1LL << 40, &load_values);
      if (status == 0 && load_values % LOAD_IDS != 0) {
        ERROR("writepath_load plugin: Values must be a multiple of %d",
              LOAD_IDS);
        status = -1;
      }
    } else if (strcasecmp(c->key, "Threads") == 0) {
      status = load_config_number(c, 1, LOAD_MAX_THREADS, &n);
      if (status == 0 && (n & (n - 1)) != 0) {
        ERROR("writepath_load plugin: Threads must be 1, 2, 4 or 8");
        status = -1;
      }
      if (status == 0)
        load_threads_n = (int)n;
    } else if (strcasecmp(c->key, "Window") == 0) {
      status = load_config_number(c, 1, 1LL << 30, &load_window);
    } else if (strcasecmp(c->key, "GoDir") == 0) {
      if (c->values_num != 1 || c->values[0].type != OCONFIG_TYPE_STRING) {
        ERROR("writepath_load plugin: GoDir expects a string");
        status = -1;
      } else {
        sstrncpy(load_go_dir, c->values[0].value.string, sizeof(load_go_dir));
      }
    } else if (strcasecmp(c->key, "CountFile") == 0) {
      if (c->values_num != 1 || c->values[0].type != OCONFIG_TYPE_STRING) {
        ERROR("writepath_load plugin: CountFile expects a string");
        status = -1;
      } else {
        status = load_map_count(c->values[0].value.string);
      }
    } else {
      ERROR("writepath_load plugin: unknown option \"%s\"", c->key);
      status = -1;
    }
    if (status != 0)
      return -1;
  }
  return 0;
}

/* ---- the threads ------------------------------------------------------- */

static int64_t load_now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void load_sleep_us(long us)
{
  struct timespec ts = {0, us * 1000};
  nanosleep(&ts, NULL);
}

static long long load_counted(void)
{
  long long sum = 0;
  for (int i = 0; i < load_counts_n; i++)
    sum += atomic_load(&load_counts[i]->count);
  return sum;
}

/* One thread's share of a run.  derive[] holds its counters' values. */
static void load_dispatch(int self, derive_t *derive)
{
  long long share = load_values / load_threads_n;
  int mine = LOAD_IDS / load_threads_n;

  for (long long i = 0; i < share; i++) {
    const struct load_id *id = &load_ids[self + load_threads_n * (i % mine)];
    value_list_t vl = VALUE_LIST_INIT;
    value_t v[2];

    if (i % LOAD_CHECK_EVERY == 0) {
      while (atomic_load(&load_dispatched) - load_counted() > load_window &&
             !atomic_load(&load_stop))
        load_sleep_us(50);
      if (atomic_load(&load_stop))
        return;
    }
    for (int k = 0; k < id->ds_num; k++) {
      if (id->derive)
        v[k].derive = derive[i % mine] += 1000 + k;
      else
        v[k].gauge = (gauge_t)(i % 1000) / 10.0;
    }
    vl.values = v;
    vl.values_len = (size_t)id->ds_num;
    sstrncpy(vl.host, id->host, sizeof(vl.host));
    sstrncpy(vl.plugin, id->plugin, sizeof(vl.plugin));
    sstrncpy(vl.plugin_instance, id->plugin_instance,
             sizeof(vl.plugin_instance));
    sstrncpy(vl.type, id->type, sizeof(vl.type));
    sstrncpy(vl.type_instance, id->type_instance, sizeof(vl.type_instance));
    plugin_dispatch_values(&vl);
    atomic_fetch_add(&load_dispatched, 1);
  }
}

/* Thread 0's wait for GoDir/go-<run>: true when it appeared, false when
 * the plugin is shutting down. */
static bool load_wait_go(int run)
{
  char path[sizeof(load_go_dir) + 32];
  struct stat st;

  snprintf(path, sizeof(path), "%s/go-%d", load_go_dir, run);
  while (!atomic_load(&load_stop)) {
    if (stat(path, &st) == 0)
      return true;
    load_sleep_us(5000);
  }
  return false;
}

static void load_report(int run, int64_t t0, int64_t t1)
{
  char path[sizeof(load_go_dir) + 32], tmp[sizeof(path) + 8];
  FILE *f;

  snprintf(path, sizeof(path), "%s/start-%d", load_go_dir, run);
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  if (!(f = fopen(tmp, "w"))) {
    ERROR("writepath_load plugin: \"%s\": %s", tmp, STRERRNO);
    return;
  }
  fprintf(f, "%lld %lld\n", (long long)t0, (long long)t1);
  if (fclose(f) != 0 || rename(tmp, path) != 0)
    ERROR("writepath_load plugin: \"%s\": %s", path, STRERRNO);
}

static void *load_thread(void *arg)
{
  int self = (int)(intptr_t)arg;
  static derive_t derives[LOAD_MAX_THREADS][LOAD_IDS];
  derive_t *derive = derives[self];

  for (int run = 0;; run++) {
    int64_t t0 = 0;

    if (self == 0) {
      if (load_wait_go(run))
        t0 = load_now_ns();
    }
    pthread_barrier_wait(&load_barrier); /* the start */
    if (atomic_load(&load_stop))
      break;
    load_dispatch(self, derive);
    pthread_barrier_wait(&load_barrier); /* every share dispatched */
    if (self == 0)
      load_report(run, t0, load_now_ns());
  }
  return NULL;
}

static int load_init(void)
{
  if (!load_go_dir[0] || load_counts_n == 0) {
    ERROR("writepath_load plugin: GoDir and CountFile are required");
    return -1;
  }
  load_ids_init();
  if (pthread_barrier_init(&load_barrier, NULL, (unsigned)load_threads_n) != 0)
    return -1;
  for (int i = 0; i < load_threads_n; i++) {
    char name[16];
    snprintf(name, sizeof(name), "wpload#%d", i % LOAD_MAX_THREADS);
    if (plugin_thread_create(&load_threads[i], load_thread, (void *)(intptr_t)i,
                             name) != 0) {
      /* collectd unloads the plugin (the threads started wait at the
       * barrier for good); the benchmark's first slice then fails. */
      ERROR("writepath_load plugin: cannot start a thread");
      return -1;
    }
    load_started++;
  }
  return 0;
}

static int load_shutdown(void)
{
  atomic_store(&load_stop, true);
  /* Thread 0 leaves its poll within 5 ms and releases the others at the
   * barrier; a run in progress ends at once. */
  for (int i = 0; i < load_started; i++)
    pthread_join(load_threads[i], NULL);
  load_started = 0;
  return 0;
}

void module_register(void)
{
  plugin_register_complex_config("writepath_load", load_config);
  plugin_register_init("writepath_load", load_init);
  plugin_register_shutdown("writepath_load", load_shutdown);
}
