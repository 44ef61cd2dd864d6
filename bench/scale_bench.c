/*
 * scale_bench.c - resident memory of the relay table: per relay, and per
 * pending command (one awaiting its gateway's notification).
 *
 *   scale_bench [--relays N] [--runs R]
 *
 * Each run, in a fresh child process: RSS (/proc/self/statm) before and
 * after bm_relay_table_add of N relays (names "plant-relay-<i>", 16
 * outputs per resourceId), then after every relay's state became known
 * (one extDOStateChanged notification each, as after start-up: the
 * steady state of a watched relay), then after every relay was asked to
 * switch on and ticked with the link up, so that each holds one pending
 * command (events drained every 1000 relays, as the gateway thread does).
 * Peer:
 * the same N names, resourceIds and outputs in a plain array of
 * {char name[64]; int64_t resource_id; int output;} (BM_RELAY_NAME_SIZE
 * is 64): what holding the configuration alone costs.
 *
 * Then the command path through the table at that scale: round trips per
 * second (bm_relay_table_request, tick, the PUBLISH event, then
 * on_response "sent" and the confirming on_notification of the command
 * issued 64 before: 64 always in flight), over relays spread across the
 * table, for 0.3 s a run, states known.  Peer: the same with 100 relays,
 * where nothing can depend on the table's size.  A cost per answer that
 * grows with the relays shows as a ratio below 1.  Prints bench/run's CSV
 * rows.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "relay.h"

static long rss_bytes(void)
{
  long size = 0, rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f || fscanf(f, "%ld %ld", &size, &rss) != 2)
    exit(1);
  fclose(f);
  return rss * sysconf(_SC_PAGESIZE);
}

struct plain_relay {
  char name[64];
  int64_t resource_id;
  int output;
};

/* Writes four doubles to fd: bytes per relay, per pending, per plain, per
 * relay with a known state. */
static int measure(int n, int fd)
{
  struct bm_relay_policy pol = {.ack_timeout = 1e6, .command_timeout = 1e6,
                                .retries = 0, .retry_backoff = 1,
                                .max_per_minute = 0};
  struct bm_events ev = {0};
  double out[4];
  long r0, r1, r2, r3, r4, rs;
  char name[64], why[256];

  r0 = rss_bytes();
  bm_relay_table_t *t = bm_relay_table_new(&pol, "0123456789abcdef");
  if (!t)
    return 1;
  for (int i = 0; i < n; i++) {
    snprintf(name, sizeof(name), "plant-relay-%d", i);
    if (bm_relay_table_add(t, name, 1000 + i / 16, 1 + i % 16) < 0)
      return 1;
  }
  r1 = rss_bytes();
  for (int i = 0; i < n; i++) {
    struct bm_notification m;
    memset(&m, 0, sizeof(m));
    snprintf(m.app_id, sizeof(m.app_id), "flexyWattApp.1");
    snprintf(m.notification_type, sizeof(m.notification_type),
             "extDOStateChanged");
    m.has_state = true;
    m.state.resource_id = 1000 + i / 16;
    m.state.output = 1 + i % 16;
    m.state.status = 0;
    if (bm_relay_table_on_notification(t, &m, 1.0, &ev) != BM_APPLY_OK)
      return 1;
    if (i % 1000 == 999)
      bm_events_clear(&ev);
  }
  bm_events_clear(&ev);
  rs = rss_bytes();
  bm_relay_table_set_connected(t, true, true, 1.0, &ev);
  bm_events_clear(&ev);
  int pending = 0;
  for (int i = 0; i < n; i++) {
    bm_relay_table_request(t, i, 1, "bench", false, 2.0, why, sizeof(why));
    if (i % 1000 == 999 || i == n - 1) {
      bm_relay_table_tick(t, 2.0, &ev);
      bm_events_clear(&ev);
    }
  }
  for (int i = 0; i < n; i++) {
    struct bm_relay_view v;
    bm_relay_table_view(t, i, &v);
    pending += v.pending;
  }
  r2 = rss_bytes();
  if (pending != n) {
    fprintf(stderr, "scale_bench: %d of %d relays pending\n", pending, n);
    return 1;
  }
  r3 = rss_bytes();
  struct plain_relay *p = malloc((size_t)n * sizeof(*p));
  if (!p)
    return 1;
  for (int i = 0; i < n; i++) {
    snprintf(p[i].name, sizeof(p[i].name), "plant-relay-%d", i);
    p[i].resource_id = 1000 + i / 16;
    p[i].output = 1 + i % 16;
  }
  r4 = rss_bytes();
  (void)r0;
  out[0] = (double)(r1 - r0) / n;
  out[1] = (double)(r2 - rs) / n;
  out[2] = (double)(r4 - r3) / n;
  out[3] = (double)(rs - r0) / n;
  if (write(fd, out, sizeof(out)) != sizeof(out))
    return 1;
  bm_events_release(&ev);
  bm_relay_table_free(t);
  free(p);
  return 0;
}

static double mono(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

#define IN_FLIGHT 64

/* Command round trips per second through a table of n relays (see the
 * top); -1 when one did not go through. */
static double cycle_rate(int n, double secs)
{
  struct bm_relay_policy pol = {.ack_timeout = 10, .command_timeout = 30,
                                .retries = 2, .retry_backoff = 1,
                                .max_per_minute = 0};
  struct bm_events ev = {0};
  struct {
    char corr[BM_MSG_ID_SIZE];
    int relay, status;
  } ring[IN_FLIGHT];
  char name[64], why[256];
  int *state = calloc((size_t)n, sizeof(int));
  bm_relay_table_t *t = bm_relay_table_new(&pol, "0123456789abcdef");
  double t0, now = 1.0, rate = -1;
  long done = 0, k = 0;

  if (!t || !state)
    goto out;
  for (int i = 0; i < n; i++) {
    struct bm_notification m;
    snprintf(name, sizeof(name), "plant-relay-%d", i);
    if (bm_relay_table_add(t, name, 1000 + i / 16, 1 + i % 16) < 0)
      goto out;
    memset(&m, 0, sizeof(m));
    m.has_state = true;
    m.state.resource_id = 1000 + i / 16;
    m.state.output = 1 + i % 16;
    if (bm_relay_table_on_notification(t, &m, now, &ev) != BM_APPLY_OK)
      goto out;
    bm_events_clear(&ev);
  }
  bm_relay_table_set_connected(t, true, true, now, &ev);
  bm_events_clear(&ev);
  t0 = mono();
  for (;; k++) {
    int slot = (int)(k % IN_FLIGHT);
    /* relays visited in a stride across the table, none twice in flight */
    int relay = (int)((k * 7919) % n);
    const struct bm_event *pub = NULL;

    if (k >= IN_FLIGHT) { /* answer the command issued 64 before */
      struct bm_response resp;
      struct bm_notification m;
      memset(&resp, 0, sizeof(resp));
      snprintf(resp.correlation_id, sizeof(resp.correlation_id), "%s",
               ring[slot].corr);
      resp.result = BM_RESULT_SENT;
      memset(&m, 0, sizeof(m));
      m.has_correlation_id = true;
      snprintf(m.correlation_id, sizeof(m.correlation_id), "%s",
               ring[slot].corr);
      m.has_state = true;
      m.state.resource_id = 1000 + ring[slot].relay / 16;
      m.state.output = 1 + ring[slot].relay % 16;
      m.state.status = ring[slot].status;
      if (bm_relay_table_on_response(t, &resp, now, &ev) != BM_APPLY_OK ||
          bm_relay_table_on_notification(t, &m, now, &ev) != BM_APPLY_OK)
        goto out;
      state[ring[slot].relay] = ring[slot].status;
      done++;
      if ((done & 255) == 0 && mono() - t0 >= secs)
        break;
    }
    bm_events_clear(&ev);
    now += 1e-4;
    bm_relay_table_request(t, relay, !state[relay], "bench", false, now, why,
                           sizeof(why));
    bm_relay_table_tick(t, now, &ev);
    for (size_t e = 0; e < ev.n; e++)
      if (ev.ev[e].kind == BM_EV_PUBLISH)
        pub = &ev.ev[e];
    if (!pub || pub->relay != relay)
      goto out;
    snprintf(ring[slot].corr, sizeof(ring[slot].corr), "%s", pub->corr);
    ring[slot].relay = relay;
    ring[slot].status = !state[relay];
  }
  rate = done / (mono() - t0);
out:
  if (rate < 0)
    fprintf(stderr, "scale_bench: a command of %ld did not go through\n", k);
  bm_events_release(&ev);
  bm_relay_table_free(t);
  free(state);
  return rate;
}

static int cmp(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
  int n = 100000, runs = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--relays"))
      n = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--runs"))
      runs = atoi(argv[i + 1]);
  }
  if (runs < 1 || runs > 99 || n < 1000)
    return 2;
  double v[4][99];
  for (int r = 0; r < runs; r++) {
    int fds[2];
    double out[4];
    if (pipe(fds) != 0)
      return 1;
    pid_t pid = fork();
    if (pid < 0)
      return 1;
    if (pid == 0) {
      close(fds[0]);
      _exit(measure(n, fds[1]));
    }
    close(fds[1]);
    int st;
    ssize_t got = read(fds[0], out, sizeof(out));
    close(fds[0]);
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) ||
        WEXITSTATUS(st) != 0 || got != sizeof(out)) {
      fprintf(stderr, "scale_bench: run %d failed\n", r + 1);
      return 1;
    }
    for (int k = 0; k < 4; k++)
      v[k][r] = out[k];
    fprintf(stderr, "scale_bench: run %d: %.1f B/relay, %.1f B/relay with "
                    "a known state, %.1f B/pending, plain %.1f B/relay\n",
            r + 1, out[0], out[3], out[1], out[2]);
  }
  double c[2][99];
  for (int r = 0; r < runs; r++) { /* taking turns at going first */
    for (int w = 0; w < 2; w++) {
      int which = (w + r) % 2;
      c[which][r] = cycle_rate(which ? 100 : n, 0.3);
      if (c[which][r] < 0)
        return 1;
    }
    fprintf(stderr, "scale_bench: run %d: %.0f round trips/s at %d relays, "
                    "%.0f at 100\n", r + 1, c[0][r], n, c[1][r]);
  }
  for (int k = 0; k < 2; k++)
    qsort(c[k], (size_t)runs, sizeof(double), cmp);
  double m[4];
  for (int k = 0; k < 4; k++) {
    qsort(v[k], (size_t)runs, sizeof(double), cmp);
    m[k] = runs % 2 ? v[k][runs / 2]
                    : (v[k][runs / 2 - 1] + v[k][runs / 2]) / 2;
  }
  printf("RSS per relay (%dk relays),bytes,lower,%.4g,%.4g,%.4g,"
         "plain array of name+resourceId+output,%.4g,%.4g,%.4g,%d,%.4g,"
         "< 300 B,%s\n", n / 1000, m[0], v[0][0], v[0][runs - 1], m[2],
         v[2][0], v[2][runs - 1], runs, m[0] / m[2], m[0] < 300 ? "yes" : "no");
  printf("RSS per relay with a known state (%dk relays),bytes,lower,%.4g,"
         "%.4g,%.4g,plain array of name+resourceId+output,%.4g,%.4g,%.4g,%d,"
         "%.4g,< 300 B,%s\n", n / 1000, m[3], v[3][0], v[3][runs - 1], m[2],
         v[2][0], v[2][runs - 1], runs, m[3] / m[2], m[3] < 300 ? "yes" : "no");
  printf("RSS per pending command (%dk pending),bytes,lower,%.4g,%.4g,%.4g,"
         "plain array of name+resourceId+output,%.4g,%.4g,%.4g,%d,%.4g,"
         "< 1024 B,%s\n", n / 1000, m[1], v[1][0], v[1][runs - 1], m[2],
         v[2][0], v[2][runs - 1], runs, m[1] / m[2],
         m[1] < 1024 ? "yes" : "no");
  double c0 = runs % 2 ? c[0][runs / 2] : (c[0][runs / 2 - 1] + c[0][runs / 2]) / 2;
  double c1 = runs % 2 ? c[1][runs / 2] : (c[1][runs / 2 - 1] + c[1][runs / 2]) / 2;
  printf("command round trips through the table (%dk relays; 64 in flight),"
         "round trips/s,higher,%.4g,%.4g,%.4g,the same with 100 relays,"
         "%.4g,%.4g,%.4g,%d,%.4g,,\n", n / 1000, c0, c[0][0], c[0][runs - 1],
         c1, c[1][0], c[1][runs - 1], runs, c0 / c1);
  return 0;
}
