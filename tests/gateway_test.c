/*
 * gateway_test.c - the gateway's mailbox (bm_gateway_ask): asks decided in
 * the order they came, every one reported, a full mailbox making its caller
 * wait for room instead of dropping, a stopped gateway never leaving a
 * caller waiting, and an ask that must not wait growing the mailbox. The
 * gateway's broker is a closed port: its thread runs its turns (asks,
 * timers) while it fails to connect.
 */
#include <errno.h>
#include <mosquitto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gateway.h"
#include "log.h"
#include "gateway_conf.h"
#include "tap.h"

#define MAILBOX 65536 /* gateway.c's ASKS_MAX */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static size_t reported, out_of_order, wrong_relay;
static uintptr_t next_tag;
static int errors;
static char last_error[512];

static void sink(int level, const char *line, void *ctx)
{
  (void)ctx;
  if (level != BM_LOG_ERR)
    return;
  pthread_mutex_lock(&lock);
  errors++;
  snprintf(last_error, sizeof(last_error), "%s", line);
  pthread_mutex_unlock(&lock);
}

/* Every decision, in the gateway thread: tags must come 0, 1, 2, ... */
static void on_asked(void *ctx, const char *gateway,
                     const struct bm_gateway_ask *a, enum bm_request rc,
                     const char *why)
{
  (void)ctx;
  (void)gateway;
  (void)rc;
  (void)why;
  pthread_mutex_lock(&lock);
  if ((uintptr_t)a->tag != next_tag)
    out_of_order++;
  next_tag = (uintptr_t)a->tag + 1;
  if (a->relay != (int)((uintptr_t)a->tag % 2))
    wrong_relay++;
  reported++;
  pthread_mutex_unlock(&lock);
}

static size_t reported_now(void)
{
  size_t n;
  pthread_mutex_lock(&lock);
  n = reported;
  pthread_mutex_unlock(&lock);
  return n;
}

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Ask i: relay i % 2, status 0, but the last two asks of the full
 * mailbox ask for 1. */
static void ask(bm_gateway_t *gw, uintptr_t i)
{
  struct bm_gateway_ask a = {.relay = (int)(i % 2),
                             .status = i == MAILBOX - 2 || i == MAILBOX - 1,
                             .kind = 1,
                             .tag = (const void *)i};
  snprintf(a.origin, sizeof(a.origin), "test ask %lu", (unsigned long)i);
  bm_gateway_ask(gw, &a);
}

/* The gateway thread, started late so that the caller beyond a full
 * mailbox surely waits for it. */
static void *run_late(void *gw)
{
  struct timespec pause = {0, 200 * 1000 * 1000};
  nanosleep(&pause, NULL);
  return bm_gateway_run(gw);
}

static bm_gateway_t *make(const char *token_path)
{
  static struct bm_gateway_conf c;
  struct bm_gateway_hooks hooks = {.asked = on_asked};
  char err[256];
  bm_gateway_t *gw;

  test_gateway_conf(&c, "test", token_path);
  if (!(gw = bm_gateway_new(&c, &hooks, err, sizeof(err))) ||
      bm_gateway_add_relay(gw, "pump", 101, 4) < 0 ||
      bm_gateway_add_relay(gw, "fan", 102, 1) < 0 ||
      bm_gateway_open(gw, "bm-gateway-test", err, sizeof(err)) != 0) {
    diag("setup: %s", err);
    return NULL;
  }
  return gw;
}

int main(void)
{
  char path[] = "/tmp/bm-gateway-test-token.XXXXXX";
  int fd = mkstemp(path);
  bm_gateway_t *gw;
  pthread_t thread;
  double t0, waited;

  alarm(60); /* a caller left waiting must not hang the suite */
  bm_log_set_sink(sink, NULL);
  if (fd < 0 || write(fd, "a.b.c\n", 6) != 6) {
    perror("token file");
    return 1;
  }
  close(fd);

  /* 0. Why a connection ended, in words where libmosquitto has none. */
  {
    char buf[96];
    is_str(bm_mqtt_lost_why(MOSQ_ERR_KEEPALIVE, true, 15, buf, sizeof(buf)),
           "not connected within KeepAlive (15 s): no CONNACK",
           "its keepalive check during a connect");
    is_str(bm_mqtt_lost_why(MOSQ_ERR_KEEPALIVE, false, 30, buf, sizeof(buf)),
           "nothing from the broker within KeepAlive (30 s)",
           "its keepalive check once connected");
    is_str(bm_mqtt_lost_why(MOSQ_ERR_CONN_LOST, false, 30, buf, sizeof(buf)),
           mosquitto_strerror(MOSQ_ERR_CONN_LOST), "a code it has text for");
    errno = ECONNRESET;
    is_str(bm_mqtt_lost_why(MOSQ_ERR_ERRNO, false, 30, buf, sizeof(buf)),
           strerror(ECONNRESET), "an errno");
    is_str(bm_mqtt_lost_why(1000, false, 30, buf, sizeof(buf)),
           "libmosquitto error 1000", "a code it has no text for, by number");
  }

  if (bm_gateway_library_init() != 0 || !(gw = make(path))) {
    unlink(path);
    return 1;
  }

  /* 1. A full mailbox (the thread not started yet), then one ask more:
   * its caller waits until the thread empties the mailbox. */
  for (uintptr_t i = 0; i < MAILBOX; i++)
    ask(gw, i);
  ok(reported_now() == 0, "%d asks fit in the mailbox, none decided yet",
     MAILBOX);
  t0 = now_s();
  if (pthread_create(&thread, NULL, run_late, gw) != 0) {
    perror("pthread_create");
    return 1;
  }
  ask(gw, MAILBOX); /* waits for room */
  waited = now_s() - t0;
  while (reported_now() < MAILBOX + 1 && now_s() - t0 < 10) {
    struct timespec pause = {0, 10 * 1000 * 1000};
    nanosleep(&pause, NULL);
  }
  {
    /* The full mailbox was one turn: the fan's last ask (status 1, after
     * 32,767 asks for 0) must be the one that holds. */
    struct bm_relay_view v[2];
    struct bm_relay_stats st;
    bool ready;
    bm_gateway_snapshot(gw, 0, v, 2, &st, &ready);
    ok(v[1].desired == 1, "the last of a turn's asks for a relay decides "
                          "(fan desired %d)",
       v[1].desired);
  }
  ok(waited >= 0.15 && waited < 5,
     "the ask beyond a full mailbox waited until the thread, started 0.2 s "
     "later, emptied it (%.3f s)",
     waited);
  for (uintptr_t i = MAILBOX + 1; i < MAILBOX + 1000; i++)
    ask(gw, i);
  t0 = now_s();
  while (reported_now() < MAILBOX + 1000 && now_s() - t0 < 10) {
    struct timespec pause = {0, 10 * 1000 * 1000};
    nanosleep(&pause, NULL);
  }
  pthread_mutex_lock(&lock);
  ok(reported == MAILBOX + 1000, "every ask decided and reported (%zu of %d)",
     reported, MAILBOX + 1000);
  ok(out_of_order == 0, "in the order they came (%zu out of order)",
     out_of_order);
  ok(wrong_relay == 0, "each with its own relay (%zu wrong)", wrong_relay);
  ok(errors == 0, "nothing logged as an error (%s)", errors ? last_error : "");
  pthread_mutex_unlock(&lock);

  /* 2. A stopped gateway with a full mailbox: an ask is logged as not
   * asked, and its caller does not wait. */
  bm_gateway_stop(gw);
  pthread_join(thread, NULL);
  for (uintptr_t i = 0; i < MAILBOX; i++)
    ask(gw, MAILBOX + 1000 + i);
  t0 = now_s();
  ask(gw, 2 * MAILBOX + 1000);
  waited = now_s() - t0;
  pthread_mutex_lock(&lock);
  ok(waited < 1 && errors == 1 && strstr(last_error, "mailbox full") &&
         strstr(last_error, "not asked"),
     "a stopped gateway refuses the ask beyond a full mailbox at once, "
     "logged (%.3f s: %s)",
     waited, last_error);
  ok(reported == MAILBOX + 1000, "and nothing more is decided");
  pthread_mutex_unlock(&lock);

  bm_gateway_free(gw);

  /* 2b. An ask with no_wait beyond a full mailbox (the thread not started:
   * the host's dispatcher would wait for a gateway thread waiting for it)
   * grows the mailbox instead of waiting, and is decided in its turn. */
  pthread_mutex_lock(&lock);
  reported = 0;
  next_tag = 0;
  out_of_order = wrong_relay = 0;
  errors = 0;
  pthread_mutex_unlock(&lock);
  if (!(gw = make(path))) {
    unlink(path);
    return 1;
  }
  for (uintptr_t i = 0; i < MAILBOX; i++)
    ask(gw, i);
  t0 = now_s();
  {
    struct bm_gateway_ask a = {.relay = (int)(MAILBOX % 2),
                               .status = 0,
                               .kind = 1,
                               .tag = (const void *)(uintptr_t)MAILBOX,
                               .no_wait = true};
    snprintf(a.origin, sizeof(a.origin), "test ask without waiting");
    bm_gateway_ask(gw, &a);
  }
  waited = now_s() - t0;
  ok(waited < 0.5 && reported_now() == 0,
     "a no_wait ask beyond a full mailbox returns at once, the thread not "
     "running (%.3f s)",
     waited);
  if (pthread_create(&thread, NULL, bm_gateway_run, gw) != 0) {
    perror("pthread_create");
    return 1;
  }
  t0 = now_s();
  while (reported_now() < MAILBOX + 1 && now_s() - t0 < 10) {
    struct timespec pause = {0, 10 * 1000 * 1000};
    nanosleep(&pause, NULL);
  }
  pthread_mutex_lock(&lock);
  ok(reported == MAILBOX + 1 && out_of_order == 0 && wrong_relay == 0 &&
         errors == 0,
     "it is decided after the %d before it, in order (%zu decided, %zu out "
     "of order, %d errors)",
     MAILBOX, reported, out_of_order, errors);
  pthread_mutex_unlock(&lock);
  bm_gateway_stop(gw);
  pthread_join(thread, NULL);
  bm_gateway_free(gw);

  /* 3. A journal past its size whose compaction fails (its temporary file
   * cannot be made): tried again once a second, not at every message. */
  {
    static struct bm_gateway_conf c;
    char dir[] = "/tmp/bm-gateway-test-journal.XXXXXX", tmp[128], err[256];
    char msg[512];
    int before;

    if (!mkdtemp(dir)) {
      perror("mkdtemp");
      return 1;
    }
    test_gateway_conf(&c, "cgw", path);
    snprintf(c.journal_file, sizeof(c.journal_file), "%s/j.journal", dir);
    c.journal_limit = 4096;
    c.journal_sync = BM_JOURNAL_SYNC_NONE;
    gw = bm_gateway_new(&c, NULL, err, sizeof(err));
    ok(gw && bm_gateway_add_relay(gw, "pump", 101, 4) >= 0 &&
           bm_gateway_open(gw, "gateway-test", err, sizeof(err)) == 0,
       "a gateway with a 4 KiB journal (%s)", err);
    snprintf(tmp, sizeof(tmp), "%s.tmp", c.journal_file);
    mkdir(tmp, 0700); /* the compaction's temporary file cannot be made */
    pthread_mutex_lock(&lock);
    before = errors;
    pthread_mutex_unlock(&lock);
    t0 = now_s();
    for (int i = 0; gw && i < 300; i++) {
      snprintf(msg, sizeof(msg),
               "{\"messageType\":\"notification\",\"appId\":"
               "\"flexyWattApp.1\",\"notificationType\":\"extDOStateChanged\","
               "\"parameters\":{\"resourceId\":101,\"output\":4,"
               "\"status\":%d}}",
               i % 2);
      bm_gateway_receive(gw, "application/third-party/flexyWattApp/1", msg,
                         strlen(msg));
    }
    waited = now_s() - t0;
    pthread_mutex_lock(&lock);
    ok(errors > before && strstr(last_error, "compaction"),
       "the failed compaction is an ERROR (%s)", last_error);
    ok(errors - before <= 2 * (1 + (int)waited),
       "tried about once a second: %d ERROR lines in %.3f s for 300 "
       "messages", errors - before, waited);
    pthread_mutex_unlock(&lock);
    bm_gateway_free(gw);
    rmdir(tmp);
    snprintf(tmp, sizeof(tmp), "rm -rf '%s'", dir);
    if (system(tmp) != 0)
      diag("could not remove %s", dir);
  }
  bm_gateway_library_cleanup();
  unlink(path);
  return done_testing();
}
