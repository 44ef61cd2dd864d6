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
 * is 64): what holding the configuration alone costs.  Prints bench/run's
 * CSV rows.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
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
  return 0;
}
