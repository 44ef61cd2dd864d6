/*
 * idle_journal.c - writes the full journals of bench/idle.sh with the
 * project's own journal code (src/journal.c), so that collectd can start
 * on them.
 *
 *   idle_journal DIR GATEWAYS RELAYS
 *
 * Writes DIR/gwNN.journal for NN = 01..GATEWAYS, each for the Gateway
 * "gwNN" of bench/idle.sh's configuration: RELAYS relays "relay-<i>"
 * (%05d), ResourceId 1000 + i / 16, Output 1 + i % 16.  Each journal is
 * what a Gateway leaves behind after a while in service, just before its
 * next compaction:
 *
 *   - a snapshot as gateway.c's snapshot_emit writes one: a SEQ record,
 *     then a STATE for every relay (confirmed on or off by a command of
 *     ours, two applied foreign correlationIds in the "#<16 hex>" form the
 *     plugin writes, and the times of its last 4 confirmed changes);
 *   - then history, as the gateway thread appends it: for each command a
 *     COMMAND (a random relay, its state flipped, correlationId of the
 *     plugin's form "<16 hex>-<seq>", an origin formatted like bimetri.c's
 *     Trigger origins), its RESPONSE "sent" and its CONFIRM, with every
 *     20th change an unsolicited CONFIRM (no correlationId) instead;
 *   - up to 4 times the snapshot's size (at least the default
 *     JournalSizeLimit, 1 MiB): bm_journal_needs_compaction compacts a
 *     journal that outgrows that, so this is the largest journal a Gateway
 *     of this size has in steady operation.
 *
 * Every command is confirmed (none pending), so a collectd starting on
 * these journals has nothing to resume or publish: it restores every
 * relay's state and goes idle.  Times lie in the hour before now.  Each
 * file is fsync'd.  Prints one line per journal (records, bytes) on
 * stderr.  Exit status 0, or 1 with a message.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "journal.h"

#define IDLE_UNSOLICITED_EVERY 20
#define IDLE_SWITCH_TIMES 4

static void die(const char *fmt, ...)
{
  va_list ap;

  fputs("idle_journal: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(1);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static int64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void relay_name(char *out, size_t size, long relay)
{
  snprintf(out, size, "relay-%05ld", relay);
}

static int64_t relay_resource_id(long relay) { return 1000 + relay / 16; }
static int relay_output(long relay) { return (int)(1 + relay % 16); }

static void append(bm_journal_t *j, const struct bm_jrec *rec)
{
  if (bm_journal_append(j, rec) != 0)
    die("bm_journal_append: %s", strerror(errno));
}

/* The snapshot part: SEQ, then one STATE per relay.  state[] gets each
 * relay's confirmed state. */
static void write_snapshot(bm_journal_t *j, long relays, uint64_t seq,
                           int64_t t, unsigned char *state)
{
  struct bm_jrec rec;

  memset(&rec, 0, sizeof(rec));
  rec.type = BM_JREC_SEQ;
  rec.time_ms = t;
  rec.u.seq.cmd_seq = seq;
  append(j, &rec);
  for (long i = 0; i < relays; i++) {
    struct bm_jrec_state *st = &rec.u.state;

    memset(&rec, 0, sizeof(rec));
    rec.type = BM_JREC_STATE;
    relay_name(st->relay, sizeof(st->relay), i);
    st->resource_id = relay_resource_id(i);
    st->output = relay_output(i);
    st->confirmed = state[i] = (unsigned char)(rng() & 1);
    st->by_command = 1;
    st->applied_seq = seq - (uint64_t)(rng() % 1000);
    st->n_applied = 2;
    for (int k = 0; k < st->n_applied; k++)
      snprintf(st->applied[k], sizeof(st->applied[k]), "#%016" PRIx64, rng());
    st->n_switches = IDLE_SWITCH_TIMES;
    for (int k = 0; k < st->n_switches; k++)
      st->switches[k] = t - (IDLE_SWITCH_TIMES - k) * 600000; /* 10 min */
    rec.time_ms = st->switches[st->n_switches - 1];
    append(j, &rec);
  }
}

/* One command of the history: COMMAND, RESPONSE "sent", CONFIRM. */
static void write_command(bm_journal_t *j, const char *prefix, uint64_t seq,
                          long relay, int status, int64_t *t)
{
  struct bm_jrec rec;
  struct bm_jrec_command *c = &rec.u.command;

  memset(&rec, 0, sizeof(rec));
  rec.type = BM_JREC_COMMAND;
  rec.time_ms = *t += 20;
  c->cmd_seq = seq;
  snprintf(c->corr, sizeof(c->corr), "%s-%" PRIu64, prefix, seq);
  relay_name(c->relay, sizeof(c->relay), relay);
  c->resource_id = relay_resource_id(relay);
  c->output = relay_output(relay);
  c->status = status;
  c->attempt = 1;
  /* bimetri.c's "trigger %s: %s%s from %s/%s%s%s/%s%s%s" */
  snprintf(c->origin, sizeof(c->origin),
           "trigger overheat-%ld: %s from plant1/sensors-cpu%ld/temperature",
           relay % 100, status ? "FAILURE" : "OKAY", relay % 4);
  append(j, &rec);

  memset(&rec, 0, sizeof(rec));
  rec.type = BM_JREC_RESPONSE;
  rec.time_ms = *t += 5;
  rec.u.response.result = 1; /* BM_RESULT_SENT */
  snprintf(rec.u.response.corr, sizeof(rec.u.response.corr), "%s-%" PRIu64,
           prefix, seq);
  append(j, &rec);

  memset(&rec, 0, sizeof(rec));
  rec.type = BM_JREC_CONFIRM;
  rec.time_ms = *t += 200;
  rec.u.confirm.resource_id = relay_resource_id(relay);
  rec.u.confirm.output = relay_output(relay);
  rec.u.confirm.status = status;
  snprintf(rec.u.confirm.corr, sizeof(rec.u.confirm.corr), "%s-%" PRIu64,
           prefix, seq);
  append(j, &rec);
}

static void write_unsolicited(bm_journal_t *j, long relay, int status,
                              int64_t *t)
{
  struct bm_jrec rec;

  memset(&rec, 0, sizeof(rec));
  rec.type = BM_JREC_CONFIRM;
  rec.time_ms = *t += 20;
  rec.u.confirm.resource_id = relay_resource_id(relay);
  rec.u.confirm.output = relay_output(relay);
  rec.u.confirm.status = status;
  append(j, &rec);
}

static void fsync_file(const char *path)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);

  if (fd < 0 || fsync(fd) != 0)
    die("fsync %s: %s", path, strerror(errno));
  if (close(fd) != 0)
    die("close %s: %s", path, strerror(errno));
}

static void write_journal(const char *path, int gateway, long relays)
{
  unsigned char *state = calloc((size_t)relays, 1);
  uint64_t seq = 1000000, snapshot, limit;
  int64_t t = now_ms() - 3600 * 1000;
  unsigned long records = 0;
  char prefix[17], err[256];
  bm_journal_t *j;

  if (!state)
    die("out of memory");
  snprintf(prefix, sizeof(prefix), "00c0ffee%08x", (unsigned)gateway);
  if (unlink(path) != 0 && errno != ENOENT)
    die("unlink %s: %s", path, strerror(errno));
  j = bm_journal_open(path, BM_JOURNAL_SYNC_NONE, NULL, NULL, err, sizeof(err));
  if (!j)
    die("bm_journal_open %s: %s", path, err);
  write_snapshot(j, relays, seq, t, state);
  records += 1 + (unsigned long)relays;
  snapshot = bm_journal_size(j);
  limit = 4 * snapshot > BM_JOURNAL_DEFAULT_LIMIT ? 4 * snapshot
                                                 : BM_JOURNAL_DEFAULT_LIMIT;
  /* A command's three records stay under 512 bytes: stop before the
   * journal would ask for its compaction. */
  for (uint64_t k = 1; bm_journal_size(j) + 512 < limit; k++) {
    long relay = (long)(rng() % (uint64_t)relays);
    int status = state[relay] ^= 1;

    if (k % IDLE_UNSOLICITED_EVERY == 0) {
      write_unsolicited(j, relay, status, &t);
      records++;
    } else {
      write_command(j, prefix, ++seq, relay, status, &t);
      records += 3;
    }
  }
  fprintf(stderr, "idle_journal: %s: %lu records, %" PRIu64 " bytes "
                  "(snapshot %" PRIu64 ")\n",
          path, records, bm_journal_size(j), snapshot);
  if (bm_journal_close(j) != 0)
    die("bm_journal_close %s: %s", path, strerror(errno));
  fsync_file(path);
  free(state);
}

int main(int argc, char **argv)
{
  char path[4096];
  int gateways;
  long relays;

  if (argc != 4) {
    fprintf(stderr, "usage: idle_journal DIR GATEWAYS RELAYS\n");
    return 2;
  }
  gateways = atoi(argv[2]);
  relays = atol(argv[3]);
  if (gateways < 1 || gateways > 99 || relays < 1 || relays > 1000000) {
    fprintf(stderr, "idle_journal: 1..99 gateways of 1..1000000 relays\n");
    return 2;
  }
  for (int g = 1; g <= gateways; g++) {
    snprintf(path, sizeof(path), "%s/gw%02d.journal", argv[1], g);
    write_journal(path, g, relays);
  }
  return 0;
}
