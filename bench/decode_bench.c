/*
 * decode_bench.c - what one gateway notification costs the plugin:
 * bm_msg_decode (parse, validate) then bm_relay_table_on_notification
 * (apply), beside a bare yajl_tree_parse + yajl_tree_free of the same bytes.
 *
 *   decode_bench count ours|bare N      run N messages once (for callgrind:
 *                                       only run_ours/run_bare are counted)
 *   decode_bench rate [--runs R] [--seconds S]
 *                                       messages/s on one core, ours and
 *                                       bare interleaved, R runs of S s;
 *                                       prints bench/run's CSV rows
 *
 * The messages: extDOStateChanged notifications of the protocol example's
 * shape (tests/data/notification-unsolicited.json), over 100 relays
 * (resourceId 1001..1010, output 1..10), each message flipping its relay's
 * status, so every one is applied (counted and checked).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <yajl/yajl_tree.h>

#include "message.h"
#include "relay.h"

#define NMSG 4000
#define NRID 10
#define NOUT 10

static char *msg[NMSG];
static size_t msg_len[NMSG];
static bm_relay_table_t *table;
static struct bm_events ev;
static double clock_now;
static unsigned long applied, failed;

static void make_messages(void)
{
  int status[NRID * NOUT] = {0};
  for (int i = 0; i < NMSG; i++) {
    /* a fixed pseudo-random walk over the relays */
    int r = (int)((i * 37u + (unsigned)i / 7u) % (NRID * NOUT));
    char buf[1024];
    status[r] ^= 1;
    int n = snprintf(
        buf, sizeof(buf),
        "{\"messageType\":\"notification\",\"appId\":\"flexyWattApp.1\","
        "\"command\":\"setExtDO\",\"notificationType\":\"extDOStateChanged\","
        "\"userName\":\"Flexywatt User\",\"userId\":12345,\"parameters\":{"
        "\"resourceId\":%d,\"brand\":\"Bimetri\",\"model\":\"BMM620\","
        "\"networkId\":\"26:AA:E0:23:23:%02X\",\"organizationId\":23456,"
        "\"output\":%d,\"status\":%d}}",
        1001 + r / NOUT, r / NOUT, 1 + r % NOUT, status[r]);
    msg[i] = malloc((size_t)n);
    if (!msg[i])
      abort();
    memcpy(msg[i], buf, (size_t)n); /* not NUL-terminated, like MQTT */
    msg_len[i] = (size_t)n;
  }
}

static void make_table(void)
{
  struct bm_relay_policy pol = {.ack_timeout = 10, .command_timeout = 30,
                                .retries = 0, .retry_backoff = 1,
                                .max_per_minute = 0};
  table = bm_relay_table_new(&pol, "0123456789abcdef");
  if (!table)
    abort();
  for (int r = 0; r < NRID * NOUT; r++) {
    char name[32];
    snprintf(name, sizeof(name), "relay-%d", r);
    if (bm_relay_table_add(table, name, 1001 + r / NOUT, 1 + r % NOUT) < 0)
      abort();
  }
}

/* Decode, validate, apply one message: what the plugin's MQTT callback does
 * with a gateway's notification before its own logging and metrics. */
__attribute__((noinline)) static void run_ours(const char *p, size_t len)
{
  static struct bm_msg m; /* 3 KiB: kept off the timed stack */
  char err[256];
  if (bm_msg_decode(p, len, &m, err, sizeof(err)) != 0 ||
      m.type != BM_MSG_NOTIFICATION) {
    failed++;
    return;
  }
  clock_now += 0.001;
  if (bm_relay_table_on_notification(table, &m.u.notification, clock_now,
                                     &ev) == BM_APPLY_OK)
    applied++;
  else
    failed++;
  bm_events_clear(&ev);
}

/* The least any consumer of the JSON must do: parse it into a tree (yajl
 * needs a NUL-terminated copy, as bm_msg_decode makes) and free it. */
__attribute__((noinline)) static void run_bare(const char *p, size_t len)
{
  char buf[2048];
  char err[256];
  memcpy(buf, p, len);
  buf[len] = '\0';
  yajl_val v = yajl_tree_parse(buf, err, sizeof(err));
  if (!v) {
    failed++;
    return;
  }
  applied++;
  yajl_tree_free(v);
}

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Messages per second over about `seconds`. */
static double rate(void (*fn)(const char *, size_t), double seconds)
{
  unsigned long n = 0;
  double t0 = now_s(), t;
  do {
    for (int i = 0; i < NMSG; i++)
      fn(msg[i], msg_len[i]);
    n += NMSG;
  } while ((t = now_s() - t0) < seconds);
  return n / t;
}

static int cmp(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
  make_messages();
  make_table();
  if (argc == 4 && !strcmp(argv[1], "count")) {
    long n = atol(argv[3]);
    void (*fn)(const char *, size_t) = !strcmp(argv[2], "bare") ? run_bare
                                                               : run_ours;
    for (long i = 0; i < n; i++)
      fn(msg[i % NMSG], msg_len[i % NMSG]);
    fprintf(stderr, "decode_bench: %s: %lu applied, %lu failed\n", argv[2],
            applied, failed);
    return failed ? 1 : 0;
  }
  if (argc >= 2 && !strcmp(argv[1], "rate")) {
    int runs = 5;
    double seconds = 1;
    for (int i = 2; i + 1 < argc; i += 2) {
      if (!strcmp(argv[i], "--runs"))
        runs = atoi(argv[i + 1]);
      else if (!strcmp(argv[i], "--seconds"))
        seconds = atof(argv[i + 1]);
    }
    if (runs < 1 || runs > 99)
      return 2;
    double o[99], b[99];
    rate(run_ours, 0.2); /* warm-up */
    rate(run_bare, 0.2);
    for (int r = 0; r < runs; r++) {
      if (r % 2) {
        b[r] = rate(run_bare, seconds);
        o[r] = rate(run_ours, seconds);
      } else {
        o[r] = rate(run_ours, seconds);
        b[r] = rate(run_bare, seconds);
      }
      fprintf(stderr, "decode_bench: run %d: ours %.0f/s, bare %.0f/s\n",
              r + 1, o[r], b[r]);
    }
    if (failed) {
      fprintf(stderr, "decode_bench: %lu messages failed\n", failed);
      return 1;
    }
    qsort(o, (size_t)runs, sizeof(double), cmp);
    qsort(b, (size_t)runs, sizeof(double), cmp);
    double om = o[runs / 2], bm = b[runs / 2];
    if (runs % 2 == 0) {
      om = (o[runs / 2 - 1] + o[runs / 2]) / 2;
      bm = (b[runs / 2 - 1] + b[runs / 2]) / 2;
    }
    printf("messages/s decode+apply (1 core),messages/s,higher,%.6g,%.6g,%.6g,"
           "yajl_tree_parse+free,%.6g,%.6g,%.6g,%d,%.4g,,\n",
           om, o[0], o[runs - 1], bm, b[0], b[runs - 1], runs, om / bm);
    return 0;
  }
  fprintf(stderr, "usage: decode_bench count ours|bare N | rate [--runs R] "
                  "[--seconds S]\n");
  return 2;
}
