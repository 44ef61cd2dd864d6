/*
 * cmdpath_fire.c - a collectd plugin for bench/cmdpath.sh: it fires the
 * notifications and values that make bimetri send commands, times
 * collectd's calls into bimetri, and sees the confirmations arrive.
 *
 *   LoadPlugin cmdpath_fire          # before bimetri (see the write path)
 *   LoadPlugin bimetri
 *   <Plugin bimetri> ... </Plugin>
 *   <Plugin cmdpath_fire>            # after bimetri's block
 *     Control "/tmp/x/ctl"           # a FIFO: one command a line
 *     Reply "/tmp/x/reply"           # a FIFO: "ok" or "error ..." per command
 *     Base 1764170000                # times are printed in ns since this
 *     Gateway "none" 64              # a bimetri Gateway and its relays,
 *     Gateway "always" 64            #   named r0 .. r<N-1>
 *     Gateway "switch" 8
 *   </Plugin>
 *
 * The notifications: host hostname_g, plugin "cmdpath", plugin instance the
 * Gateway, type "gauge", type instance the relay ("r7") for one that a
 * Trigger of that relay matches (FAILURE to switch it on, OKAY off), or
 * "none" (timed) or "warm" (untimed) for one that matches no Trigger; the
 * message and meta data of a threshold plugin's report. Each timed
 * plugin_dispatch_notification call is timed with CLOCK_MONOTONIC around
 * it: collectd calls the notification callbacks synchronously, and with no
 * log plugin loaded bimetri's is the only one.
 *
 * The write path: collectd calls the write callbacks of every value in the
 * order they were registered. "cmdpath_pre" is registered when the plugin
 * is loaded (before bimetri's, registered in bimetri's config), and
 * "cmdpath_post" in this plugin's config (after it), so post minus pre, in
 * the same write thread, is bimetri's write callback. Values dispatched
 * here are "cmdpath-<Gateway>/gauge-r<i>" (the Switch of relay r<i> sees
 * it) and "cmdpath-<Gateway>/gauge-none" (no Switch does).
 *
 * The confirmation: cmdpath_post also watches bimetri's "bool" values; the
 * CLOCK_REALTIME at which a relay's value changes is its confirmation.
 *
 * Commands on the Control FIFO, "VERB GW COUNT PAUSE_MS FILE", each
 * answered on Reply; FILE is replaced:
 *
 *   lat GW N P FILE     N commands one at a time, round-robin over the
 *                       relays, each flipping its relay: an untimed "warm"
 *                       notification, then the matching one and a "none"
 *                       (taking turns at going first), then the wait for
 *                       the confirmation, then P ms of quiet. Lines:
 *                         N <relay> <status> <t_dispatch> <dur> <t_confirmed>
 *                         X <dur>
 *                       and after each confirmation a hand-off: an untimed
 *                       "warm", then a timed write to an eventfd that wakes
 *                       this plugin's hand-off thread, asleep in poll(),
 *                       which then works HANDOFF_WORK_US of CPU (about the
 *                       gateway thread's turn for a command) before it
 *                       sleeps again; waited for before the quiet. It is
 *                       what any callback that hands work to a sleeping
 *                       thread pays on this machine. Line:
 *                         H <dur>
 *   burst GW K P FILE   K bursts: one thread per relay (64 threads, started
 *                       at init, released together by a barrier) dispatches
 *                       "warm", then its relay's matching notification and
 *                       a "none" (half of the threads the other way round,
 *                       swapped each burst); then the wait for every
 *                       confirmation, then P ms of quiet. Lines:
 *                         B <k> <relay> <status> <t_dispatch> <dur> <t_confirmed>
 *                         Y <k> <dur>
 *                       and, the same threads right after, a timed write to
 *                       the hand-off thread's eventfd (as in "lat", not
 *                       waited for): the hand-off in the same bursts. Line:
 *                         Z <k> <dur>
 *   switch GW K P FILE  K rounds: for each relay a value that flips its
 *                       Switch (100 or 0, for OnAbove 70 / OffBelow 60), a
 *                       value of "none" and one of "handoff" (the three
 *                       taking turns at going first), all dispatched back
 *                       to back; then the wait for every confirmation and
 *                       for the write callbacks of all of them, then P ms
 *                       of quiet. For "handoff" cmdpath_post writes to the
 *                       hand-off thread's eventfd (not waited for), in the
 *                       write thread, as a callback handing its work over
 *                       would. Lines:
 *                         W <dur>   bimetri's write callback, a Switch's value
 *                         V <dur>   bimetri's write callback, "none"
 *                         H <dur>   bimetri's (matching nothing) and the
 *                                   eventfd write, "handoff"
 *                         S <k> <relay> <status> <t_dispatch> <t_confirmed>
 *
 * Times: t_* CLOCK_REALTIME in ns since Base, dur in ns. A confirmation
 * that does not come within 10 s answers "error ...".
 */
#include <collectd/core/daemon/plugin.h>
#include <collectd/core/utils/common/common.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PLUGIN "cmdpath_fire"
#define MAX_GW 4
#define MAX_RELAYS 64
#define WORKERS MAX_RELAYS
#define WAIT_S 10
#define MAX_SAMPLES 4096

struct gateway {
  char name[DATA_MAX_NAME_LEN];
  int relays;
  int state[MAX_RELAYS];      /* the last bool value: -1 unknown */
  int64_t changed[MAX_RELAYS]; /* when it last changed (ns since Base) */
};

/* One worker's part of a burst and what it measured. */
struct job {
  int relay, want;
  bool match_first;
  int64_t t_dispatch, dur, dur_none, dur_hand;
};

static char control_path[PATH_MAX], reply_path[PATH_MAX];
static long base_sec;
static struct gateway gws[MAX_GW];
static int gws_n;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
/* Write callback samples of the running "switch" command (under lock). */
static struct {
  char kind; /* 'W', 'V' or 'H' */
  int64_t dur;
} samples[MAX_SAMPLES];
static int samples_n;
static int samples_gw = -1;

static pthread_t driver;
static bool driver_started;
static atomic_bool quit;
static pthread_t workers[WORKERS];
static int workers_n;
static pthread_barrier_t start_line, finish_line;
static struct job jobs[WORKERS];
static int job_gw;

static __thread int64_t pre_ns;

#define HANDOFF_WORK_US 100
static int handoff_fd = -1;
static pthread_t handoff;
static atomic_int handoff_turns; /* turns the hand-off thread finished */

static int64_t mono_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t real_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)(ts.tv_sec - base_sec) * 1000000000 + ts.tv_nsec;
}

static int find_gateway(const char *name)
{
  for (int g = 0; g < gws_n; g++)
    if (strcmp(gws[g].name, name) == 0)
      return g;
  return -1;
}

/* "r<i>" of gateway g: i, or -1. */
static int relay_of(int g, const char *type_instance)
{
  char *end;
  long i;

  if (type_instance[0] != 'r' || type_instance[1] < '0' ||
      type_instance[1] > '9')
    return -1;
  i = strtol(type_instance + 1, &end, 10);
  return *end == '\0' && i < gws[g].relays ? (int)i : -1;
}

/* Writes to the hand-off thread's eventfd (a full counter, EAGAIN, still
 * wakes it); returns how long the write took, in ns. */
static int64_t handoff_kick(void)
{
  uint64_t one = 1;
  int64_t t0 = mono_ns();

  if (write(handoff_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
    ERROR(PLUGIN " plugin: eventfd write: %s", STRERRNO);
  return mono_ns() - t0;
}

/* ---- the write path ------------------------------------------------------ */

static int pre_write(const data_set_t *ds, const value_list_t *vl,
                     user_data_t *ud)
{
  (void)ds;
  (void)vl;
  (void)ud;
  pre_ns = mono_ns();
  return 0;
}

static int post_write(const data_set_t *ds, const value_list_t *vl,
                      user_data_t *ud)
{
  int64_t dur = mono_ns() - pre_ns;
  int g, r;
  (void)ds;
  (void)ud;

  if (strcmp(vl->plugin, "cmdpath") == 0) {
    char kind = strcmp(vl->type_instance, "none") == 0      ? 'V'
                : strcmp(vl->type_instance, "handoff") == 0 ? 'H'
                                                            : 'W';
    if (kind == 'H') {
      handoff_kick();
      dur = mono_ns() - pre_ns;
    }
    pthread_mutex_lock(&lock);
    if ((g = find_gateway(vl->plugin_instance)) >= 0 && g == samples_gw &&
        samples_n < MAX_SAMPLES) {
      samples[samples_n].kind = kind;
      samples[samples_n++].dur = dur;
      pthread_cond_broadcast(&changed);
    }
    pthread_mutex_unlock(&lock);
    return 0;
  }
  if (strcmp(vl->plugin, "bimetri") != 0 || strcmp(vl->type, "bool") != 0 ||
      vl->values_len != 1)
    return 0;
  pthread_mutex_lock(&lock);
  if ((g = find_gateway(vl->plugin_instance)) >= 0 &&
      (r = relay_of(g, vl->type_instance)) >= 0) {
    int v = vl->values[0].gauge > 0.5;
    if (gws[g].state[r] != v) {
      gws[g].state[r] = v;
      gws[g].changed[r] = real_ns();
      pthread_cond_broadcast(&changed);
    }
  }
  pthread_mutex_unlock(&lock);
  return 0;
}

/* ---- firing -------------------------------------------------------------- */

#define NONE (-1) /* a notification matching no Trigger, timed */
#define WARM (-2) /* the same, untimed, to wake the CPU and caches first */
#define HANDOFF (-3) /* a value of "handoff" (values only) */

/* Dispatches the notification a threshold would send for relay (NONE:
 * type instance "none", WARM: "warm"); returns how long the call took, in
 * ns. */
static int64_t fire_notification(int g, int relay, int want, int64_t *t_rt)
{
  notification_t n = {0};
  int64_t t0, t1;

  n.severity = want ? NOTIF_FAILURE : NOTIF_OKAY;
  n.time = cdtime();
  sstrncpy(n.host, hostname_g, sizeof(n.host));
  sstrncpy(n.plugin, "cmdpath", sizeof(n.plugin));
  sstrncpy(n.plugin_instance, gws[g].name, sizeof(n.plugin_instance));
  sstrncpy(n.type, "gauge", sizeof(n.type));
  if (relay >= 0)
    snprintf(n.type_instance, sizeof(n.type_instance), "r%d", relay);
  else
    sstrncpy(n.type_instance, relay == WARM ? "warm" : "none",
             sizeof(n.type_instance));
  snprintf(n.message, sizeof(n.message),
           "Host %.32s, plugin cmdpath (instance %.16s) type gauge (instance "
           "%.8s): "
           "Data source \"value\" is currently %s. %s",
           n.host, n.plugin_instance, n.type_instance,
           want ? "100.000000" : "0.000000",
           want ? "That is above the failure threshold of 70.000000."
                : "That is within the failure region of 60.000000 and "
                  "70.000000.");
  if (plugin_notification_meta_add_string(&n, "DataSource", "value") != 0 ||
      plugin_notification_meta_add_double(&n, "CurrentValue",
                                          want ? 100 : 0) != 0 ||
      plugin_notification_meta_add_double(&n, "FailureMax", 70) != 0)
    ERROR(PLUGIN " plugin: out of memory for meta data");

  if (t_rt)
    *t_rt = real_ns();
  t0 = mono_ns();
  plugin_dispatch_notification(&n);
  t1 = mono_ns();
  plugin_notification_meta_free(n.meta);
  return t1 - t0;
}

static void fire_value(int g, int relay, double value)
{
  value_list_t vl = VALUE_LIST_INIT;
  value_t v = {.gauge = value};

  vl.values = &v;
  vl.values_len = 1;
  vl.time = cdtime();
  sstrncpy(vl.plugin, "cmdpath", sizeof(vl.plugin));
  sstrncpy(vl.plugin_instance, gws[g].name, sizeof(vl.plugin_instance));
  sstrncpy(vl.type, "gauge", sizeof(vl.type));
  if (relay >= 0)
    snprintf(vl.type_instance, sizeof(vl.type_instance), "r%d", relay);
  else
    sstrncpy(vl.type_instance, relay == HANDOFF ? "handoff" : "none",
             sizeof(vl.type_instance));
  plugin_dispatch_values(&vl);
}

/* The state that flips relay r: off or unknown asks for on (an OKAY does
 * not act on a relay of unknown state). */
static int want_of(int g, int r)
{
  int w;
  pthread_mutex_lock(&lock);
  w = gws[g].state[r] == 1 ? 0 : 1;
  pthread_mutex_unlock(&lock);
  return w;
}

/* Waits on `changed` (lock held) for at most 100 ms; returns -1 once
 * `until` (CLOCK_MONOTONIC ns) has passed or the plugin is shutting down,
 * so that a shutdown never waits for a confirmation that cannot come. */
static int wait_changed(int64_t until)
{
  struct timespec ts;
  int64_t now = mono_ns(), step = 100000000;

  if (now >= until || atomic_load(&quit))
    return -1;
  if (until - now < step)
    step = until - now;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_nsec += step % 1000000000;
  ts.tv_sec += ts.tv_nsec / 1000000000;
  ts.tv_nsec %= 1000000000;
  pthread_cond_timedwait(&changed, &lock, &ts);
  return 0;
}

/* Waits until every relay in [from, to) of g has state want[r]; returns 0,
 * or -1 after WAIT_S seconds or at shutdown. */
static int wait_states(int g, int from, int to, const int *want)
{
  int64_t until = mono_ns() + (int64_t)WAIT_S * 1000000000;
  int rc = 0;

  pthread_mutex_lock(&lock);
  for (int r = from; r < to && rc == 0;) {
    if (gws[g].state[r] == want[r])
      r++;
    else
      rc = wait_changed(until);
  }
  pthread_mutex_unlock(&lock);
  return rc;
}

static void quiet(long ms)
{
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

/* The hand-off thread: asleep in poll() until handoff_fd is written, then
 * HANDOFF_WORK_US of CPU. */
static void *handoff_thread(void *arg)
{
  (void)arg;
  while (!atomic_load(&quit)) {
    struct pollfd p = {.fd = handoff_fd, .events = POLLIN};
    uint64_t count;
    int64_t until;

    if (poll(&p, 1, 200) <= 0 || read(handoff_fd, &count, sizeof(count)) < 0)
      continue;
    until = mono_ns() + HANDOFF_WORK_US * 1000;
    while (mono_ns() < until)
      ;
    atomic_fetch_add(&handoff_turns, 1);
  }
  return NULL;
}

/* Wakes the hand-off thread; returns how long the write took, in ns, once
 * the thread finished its turn. */
static int64_t fire_handoff(void)
{
  int turns = atomic_load(&handoff_turns);
  int64_t dur = handoff_kick();

  while (atomic_load(&handoff_turns) == turns && !atomic_load(&quit))
    quiet(1);
  return dur;
}

static int run_lat(int g, int n, long pause, FILE *out, char *err,
                   size_t errlen)
{
  static int next[MAX_GW];
  int want[MAX_RELAYS];

  for (int i = 0; i < n; i++) {
    int r = next[g]++ % gws[g].relays;
    int64_t t_rt, dur, dur_none, t_conf;

    want[r] = want_of(g, r);
    fire_notification(g, WARM, want[r], NULL);
    if (i % 2) {
      dur_none = fire_notification(g, NONE, want[r], NULL);
      dur = fire_notification(g, r, want[r], &t_rt);
    } else {
      dur = fire_notification(g, r, want[r], &t_rt);
      dur_none = fire_notification(g, NONE, want[r], NULL);
    }
    if (wait_states(g, r, r + 1, want) != 0) {
      snprintf(err, errlen, "lat %s: relay r%d not confirmed %s within %d s",
               gws[g].name, r, want[r] ? "on" : "off", WAIT_S);
      return -1;
    }
    pthread_mutex_lock(&lock);
    t_conf = gws[g].changed[r];
    pthread_mutex_unlock(&lock);
    fprintf(out, "N %d %d %" PRId64 " %" PRId64 " %" PRId64 "\nX %" PRId64 "\n",
            r, want[r], t_rt, dur, t_conf, dur_none);
    quiet(pause / 2);
    fire_notification(g, WARM, want[r], NULL);
    fprintf(out, "H %" PRId64 "\n", fire_handoff());
    quiet(pause / 2);
  }
  return 0;
}

static void *worker(void *arg)
{
  struct job *j = arg;

  for (;;) {
    pthread_barrier_wait(&start_line);
    if (atomic_load(&quit))
      break;
    if (j->relay >= 0) {
      fire_notification(job_gw, WARM, j->want, NULL);
      if (j->match_first) {
        j->dur = fire_notification(job_gw, j->relay, j->want, &j->t_dispatch);
        j->dur_none = fire_notification(job_gw, NONE, j->want, NULL);
      } else {
        j->dur_none = fire_notification(job_gw, NONE, j->want, NULL);
        j->dur = fire_notification(job_gw, j->relay, j->want, &j->t_dispatch);
      }
      j->dur_hand = handoff_kick();
    }
    pthread_barrier_wait(&finish_line);
  }
  return NULL;
}

static int run_burst(int g, int k, long pause, FILE *out, char *err,
                     size_t errlen)
{
  int want[MAX_RELAYS];

  for (int b = 0; b < k; b++) {
    job_gw = g;
    for (int w = 0; w < WORKERS; w++) {
      jobs[w].relay = w < gws[g].relays ? w : -1;
      if (jobs[w].relay >= 0)
        jobs[w].want = want[w] = want_of(g, w);
      jobs[w].match_first = (w + b) % 2 == 0;
    }
    pthread_barrier_wait(&start_line);
    pthread_barrier_wait(&finish_line);
    if (wait_states(g, 0, gws[g].relays, want) != 0) {
      snprintf(err, errlen, "burst %s: not every relay confirmed within %d s",
               gws[g].name, WAIT_S);
      return -1;
    }
    for (int r = 0; r < gws[g].relays; r++) {
      int64_t t_conf;
      pthread_mutex_lock(&lock);
      t_conf = gws[g].changed[r];
      pthread_mutex_unlock(&lock);
      fprintf(out,
              "B %d %d %d %" PRId64 " %" PRId64 " %" PRId64 "\nY %d %" PRId64
              "\nZ %d %" PRId64 "\n",
              b, r, jobs[r].want, jobs[r].t_dispatch, jobs[r].dur, t_conf, b,
              jobs[r].dur_none, b, jobs[r].dur_hand);
    }
    quiet(pause);
  }
  return 0;
}

static int run_switch(int g, int k, long pause, FILE *out, char *err,
                      size_t errlen)
{
  int want[MAX_RELAYS];
  int64_t t_rt[MAX_RELAYS];

  for (int b = 0; b < k; b++) {
    int need = 3 * gws[g].relays;
    int64_t until;

    pthread_mutex_lock(&lock);
    samples_n = 0;
    samples_gw = g;
    pthread_mutex_unlock(&lock);
    for (int r = 0; r < gws[g].relays; r++)
      want[r] = want_of(g, r);
    for (int r = 0; r < gws[g].relays; r++) {
      /* match, none, handoff; the first of them rotating */
      for (int i = 0; i < 3; i++) {
        int kind = (r + b + i) % 3;
        if (kind == 0) {
          t_rt[r] = real_ns();
          fire_value(g, r, want[r] ? 100 : 0);
        } else {
          fire_value(g, kind == 1 ? NONE : HANDOFF, 50);
        }
      }
    }
    if (wait_states(g, 0, gws[g].relays, want) != 0) {
      snprintf(err, errlen, "switch %s: not every relay confirmed within %d s",
               gws[g].name, WAIT_S);
      return -1;
    }
    until = mono_ns() + (int64_t)WAIT_S * 1000000000;
    pthread_mutex_lock(&lock);
    while (samples_n < need && wait_changed(until) == 0)
      ;
    int got = samples_n;
    samples_gw = -1;
    for (int i = 0; i < got; i++)
      fprintf(out, "%c %" PRId64 "\n", samples[i].kind, samples[i].dur);
    for (int r = 0; r < gws[g].relays; r++)
      fprintf(out, "S %d %d %d %" PRId64 " %" PRId64 "\n", b, r, want[r],
              t_rt[r], gws[g].changed[r]);
    pthread_mutex_unlock(&lock);
    if (got < need) {
      snprintf(err, errlen, "switch %s: %d of %d values written within %d s",
               gws[g].name, got, need, WAIT_S);
      return -1;
    }
    quiet(pause);
  }
  return 0;
}

/* One command line; writes the reply into reply (without newline). */
static void run_command(char *line, char *reply, size_t len)
{
  char verb[16], gw[DATA_MAX_NAME_LEN], file[PATH_MAX];
  int count, g, rc;
  long pause;
  FILE *out;

  if (sscanf(line, "%15s %63s %d %ld %4095s", verb, gw, &count, &pause,
             file) != 5 ||
      count <= 0 || pause < 0 || pause > 10000) {
    snprintf(reply, len, "error bad command: %.200s", line);
    return;
  }
  if ((g = find_gateway(gw)) < 0) {
    snprintf(reply, len, "error no Gateway \"%s\"", gw);
    return;
  }
  if (!(out = fopen(file, "w"))) {
    snprintf(reply, len, "error %.200s: %.200s", file, STRERRNO);
    return;
  }
  snprintf(reply, len, "ok");
  if (strcmp(verb, "lat") == 0) {
    rc = run_lat(g, count, pause, out, reply, len);
  } else if (strcmp(verb, "burst") == 0) {
    rc = run_burst(g, count, pause, out, reply, len);
  } else if (strcmp(verb, "switch") == 0) {
    rc = run_switch(g, count, pause, out, reply, len);
  } else {
    snprintf(reply, len, "error unknown command \"%s\"", verb);
    rc = -1;
  }
  if (fclose(out) != 0 && rc == 0)
    snprintf(reply, len, "error %.200s: %.200s", file, STRERRNO);
  if (rc != 0)
    ERROR(PLUGIN " plugin: %s", reply);
}

/* Reads commands from the Control FIFO until shutdown. Both FIFOs are
 * opened read-write so that neither open nor read waits for the script. */
static void *drive(void *arg)
{
  char line[8192], reply[512];
  size_t have = 0;
  int ctl = -1, rep = -1;
  (void)arg;

  if ((ctl = open(control_path, O_RDWR | O_CLOEXEC)) < 0 ||
      (rep = open(reply_path, O_RDWR | O_CLOEXEC)) < 0) {
    ERROR(PLUGIN " plugin: cannot open \"%s\" or \"%s\": %s", control_path,
          reply_path, STRERRNO);
    goto out;
  }
  while (!atomic_load(&quit)) {
    struct pollfd pfd = {ctl, POLLIN, 0};
    char *nl;
    ssize_t n;

    if (poll(&pfd, 1, 200) <= 0)
      continue;
    n = read(ctl, line + have, sizeof(line) - 1 - have);
    if (n <= 0)
      continue;
    have += (size_t)n;
    line[have] = '\0';
    while ((nl = strchr(line, '\n'))) {
      *nl = '\0';
      run_command(line, reply, sizeof(reply) - 1);
      strcat(reply, "\n");
      if (write(rep, reply, strlen(reply)) < 0)
        ERROR(PLUGIN " plugin: cannot answer on \"%s\": %s", reply_path,
              STRERRNO);
      have -= (size_t)(nl + 1 - line);
      memmove(line, nl + 1, have + 1);
    }
    if (have == sizeof(line) - 1)
      have = 0; /* no newline in 8 KiB: garbage */
  }
out:
  if (ctl >= 0)
    close(ctl);
  if (rep >= 0)
    close(rep);
  return NULL;
}

/* ---- collectd ------------------------------------------------------------ */

static int fire_config(oconfig_item_t *ci)
{
  for (int i = 0; i < ci->children_num; i++) {
    oconfig_item_t *c = ci->children + i;

    if (strcasecmp(c->key, "Control") == 0 && c->values_num == 1 &&
        c->values[0].type == OCONFIG_TYPE_STRING) {
      sstrncpy(control_path, c->values[0].value.string, sizeof(control_path));
    } else if (strcasecmp(c->key, "Reply") == 0 && c->values_num == 1 &&
               c->values[0].type == OCONFIG_TYPE_STRING) {
      sstrncpy(reply_path, c->values[0].value.string, sizeof(reply_path));
    } else if (strcasecmp(c->key, "Base") == 0 && c->values_num == 1 &&
               c->values[0].type == OCONFIG_TYPE_NUMBER) {
      base_sec = (long)c->values[0].value.number;
    } else if (strcasecmp(c->key, "Gateway") == 0 && c->values_num == 2 &&
               c->values[0].type == OCONFIG_TYPE_STRING &&
               c->values[1].type == OCONFIG_TYPE_NUMBER && gws_n < MAX_GW &&
               c->values[1].value.number >= 1 &&
               c->values[1].value.number <= MAX_RELAYS) {
      struct gateway *g = &gws[gws_n++];
      sstrncpy(g->name, c->values[0].value.string, sizeof(g->name));
      g->relays = (int)c->values[1].value.number;
      for (int r = 0; r < MAX_RELAYS; r++)
        g->state[r] = -1;
    } else {
      ERROR(PLUGIN " plugin: bad option \"%s\" (Control \"fifo\", Reply "
                   "\"fifo\", Base seconds, Gateway \"name\" relays 1..%d; "
                   "at most %d Gateways)",
            c->key, MAX_RELAYS, MAX_GW);
      return -1;
    }
  }
  if (!control_path[0] || !reply_path[0] || base_sec <= 0 || gws_n == 0) {
    ERROR(PLUGIN " plugin: Control, Reply, Base and a Gateway are required");
    return -1;
  }
  /* After bimetri's write callback, which its config registered. */
  return plugin_register_write("cmdpath_post", post_write, NULL);
}

static int fire_init(void)
{
  if (pthread_barrier_init(&start_line, NULL, WORKERS + 1) != 0 ||
      pthread_barrier_init(&finish_line, NULL, WORKERS + 1) != 0) {
    ERROR(PLUGIN " plugin: pthread_barrier_init failed");
    return -1;
  }
  for (; workers_n < WORKERS; workers_n++) {
    jobs[workers_n].relay = -1;
    if (plugin_thread_create(&workers[workers_n], worker, &jobs[workers_n],
                             "cmdpath#fire") != 0) {
      ERROR(PLUGIN " plugin: cannot start worker %d", workers_n);
      return -1;
    }
  }
  if ((handoff_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0 ||
      pthread_create(&handoff, NULL, handoff_thread, NULL) != 0) {
    ERROR(PLUGIN " plugin: cannot start the hand-off thread");
    return -1;
  }
  if (plugin_thread_create(&driver, drive, NULL, "cmdpath#drive") != 0) {
    ERROR(PLUGIN " plugin: cannot start the driver thread");
    return -1;
  }
  driver_started = true;
  return 0;
}

static int fire_shutdown(void)
{
  atomic_store(&quit, true);
  if (driver_started)
    pthread_join(driver, NULL);
  driver_started = false;
  if (handoff_fd >= 0) {
    pthread_join(handoff, NULL); /* it sees quit within 200 ms */
    close(handoff_fd);
    handoff_fd = -1;
  }
  if (workers_n == WORKERS) {
    pthread_barrier_wait(&start_line); /* the workers see quit and end */
    for (int w = 0; w < WORKERS; w++)
      pthread_join(workers[w], NULL);
  }
  workers_n = 0;
  return 0;
}

void module_register(void)
{
  /* Before bimetri's write callback: bimetri is loaded after this plugin. */
  plugin_register_write("cmdpath_pre", pre_write, NULL);
  plugin_register_complex_config(PLUGIN, fire_config);
  plugin_register_init(PLUGIN, fire_init);
  plugin_register_shutdown(PLUGIN, fire_shutdown);
}
