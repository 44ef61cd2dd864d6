/*
 * journal_bench.c - the journal's benchmark (src/journal.h): replay, read
 * and compaction of a journal of 1,000,000 records, and commands per second
 * with JournalSync always under concurrent triggers (group commit).  Every
 * figure is measured beside a peer in the same run, runs interleaved, so
 * the machine's noise falls on both alike.
 *
 * Built and run by bench/run, which tabulates what this prints; alone:
 *
 *   cc -O2 -D_GNU_SOURCE -Isrc -o journal_bench bench/journal_bench.c \
 *      src/journal.c src/crc32c.c src/log.c src/idmap.c [src/alloc.c] \
 *      -lpthread
 *   ./journal_bench [--records N] [--relays N] [--runs N] [--seconds S]
 *                   [--concurrency N] [--dir DIR]
 *
 * Output: CSV on stdout, a header line and one row per (figure, peer):
 *
 *   figure,unit,better,ours_median,ours_min,ours_max,peer,peer_median,
 *   peer_min,peer_max,runs,ratio,target,target_met
 *
 *   better      "higher" or "lower": which way is good for this unit
 *   ratio       ours_median / peer_median
 *   target      the goal for the figure, or empty
 *   target_met  "yes", "no" or empty (no target); judged on the median
 *
 * Progress goes to stderr.  The files live in a fresh directory under
 * --dir (default $BENCH_DIR, else /tmp), removed at exit.
 *
 * The figures and their peers:
 *
 *   1. A journal of --records records is written (JournalSync none) the way
 *      the gateway writes one: for each command a COMMAND, a RESPONSE
 *      "sent" and a CONFIRM, pipelined (a few commands in flight), over
 *      --relays relays.  It is fsync'd once, untimed.
 *   2. Replay: bm_journal_open with the callback folding records into
 *      per-relay state like gateway.c's replay_record (relay lookup through
 *      an idmap, the correlationId map, the pending command copied, the
 *      times of confirmed changes kept for the switch limits).  Warm
 *      (file in the page cache) and cold (its pages dropped with
 *      posix_fadvise DONTNEED first).  Peers: a read() loop over the same
 *      file with the journal's 64 KiB window, summing the bytes (the
 *      storage / page cache limit), and the same loop computing CRC-32C
 *      over every byte (the floor of any replay that checks checksums).
 *   3. bm_journal_read of the same file, warm, with the same fold.
 *   4. Compaction: a copy of the journal is opened (replayed, untimed),
 *      then bm_journal_compact writes the snapshot gateway.c's
 *      snapshot_emit would (a SEQ, a STATE per relay with its last change
 *      times, the pending commands) and replaces the journal.  Peer: the
 *      same bytes written to a temporary file, fsync, rename over a copy of
 *      the same old journal, close of the old file (freeing it), directory
 *      fsync: the durable replace alone.  Also the compacted size, beside
 *      the journal it replaced.
 *   5. Group commit: --concurrency trigger threads each want one command
 *      durable at a time (closed loop).  One writer thread, the gateway
 *      thread, takes every queued command, appends their COMMAND records,
 *      calls bm_journal_sync once, then publishes (releases the waiters).
 *      Peer: the same threads, each appending its COMMAND and calling
 *      bm_journal_sync under a mutex: fsync per write, same code and file.
 *      Measured over --seconds after a short warm-up, fresh journal per
 *      run.  Also with one trigger, where no batching is possible, and
 *      the journal alone: one thread appending --concurrency records per
 *      bm_journal_sync, beside the one-trigger fsync per write.
 *
 * The phases that time fsyncs (4, 5) start after sync() and a pause, so
 * that the writeback of the copies made before does not land on them, and
 * ours and the peer take turns at going first.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "idmap.h"
#include "journal.h"

#define BENCH_MAX_RUNS 101
#define BENCH_READ_BUF (64 * 1024) /* the journal's reader window */
#define BENCH_COPY_BUF (1024 * 1024)
#define BENCH_CORR_PREFIX "5f3a9c0d1e4b7a62" /* 16 hex digits, like ours */
#define BENCH_PIPELINE 4 /* commands in flight while writing the journal */
#define BENCH_WARMUP_S 0.3

struct options {
  long records;
  long relays;
  int runs;
  double seconds;
  int concurrency;
  const char *dir;
};

static char bench_dir[PATH_MAX]; /* removed at exit when set */

/* --- small helpers ----------------------------------------------------- */

static void cleanup_dir(void);

static void __attribute__((noreturn, format(printf, 1, 2)))
die(const char *fmt, ...)
{
  va_list ap;
  fprintf(stderr, "journal_bench: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(1);
}

static void __attribute__((format(printf, 1, 2))) progress(const char *fmt,
                                                           ...)
{
  va_list ap;
  fprintf(stderr, "journal_bench: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

static double now_s(void)
{
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
    die("clock_gettime: %s", strerror(errno));
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
    ;
}

static void path_in_dir(char *out, size_t size, const char *name)
{
  int n = snprintf(out, size, "%s/%s", bench_dir, name);
  if (n < 0 || (size_t)n >= size)
    die("path too long: %s/%s", bench_dir, name);
}

static void write_all(int fd, const void *buf, size_t n)
{
  const unsigned char *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      die("write: %s", w < 0 ? strerror(errno) : "wrote nothing");
    p += w;
    n -= (size_t)w;
  }
}

static void fsync_or_die(int fd, const char *what)
{
  if (fsync(fd) < 0)
    die("fsync %s: %s", what, strerror(errno));
}

static void close_or_die(int fd, const char *what)
{
  if (close(fd) < 0)
    die("close %s: %s", what, strerror(errno));
}

static void fsync_dir(void)
{
  int fd = open(bench_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    die("open %s: %s", bench_dir, strerror(errno));
  fsync_or_die(fd, bench_dir);
  close_or_die(fd, bench_dir);
}

static void unlink_if_there(const char *path)
{
  if (unlink(path) < 0 && errno != ENOENT)
    die("unlink %s: %s", path, strerror(errno));
}

/* Copies `from` to a new file `to`, fsync'd: the journal as it would be on
 * disk at a restart. */
static void copy_file(const char *from, const char *to)
{
  unsigned char *buf = malloc(BENCH_COPY_BUF);
  int in = open(from, O_RDONLY | O_CLOEXEC);
  int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ssize_t got;

  if (!buf || in < 0 || out < 0)
    die("copy %s to %s: %s", from, to, strerror(errno));
  while ((got = read(in, buf, BENCH_COPY_BUF)) != 0) {
    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0)
      die("read %s: %s", from, strerror(errno));
    write_all(out, buf, (size_t)got);
  }
  fsync_or_die(out, to);
  close_or_die(out, to);
  close_or_die(in, from);
  free(buf);
}

/* Reads a whole file into memory (caller frees). */
static unsigned char *slurp(const char *path, size_t *len)
{
  struct stat st;
  unsigned char *buf;
  size_t off = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);

  if (fd < 0 || fstat(fd, &st) < 0)
    die("open %s: %s", path, strerror(errno));
  buf = malloc((size_t)st.st_size + 1);
  if (!buf)
    die("out of memory");
  while (off < (size_t)st.st_size) {
    ssize_t got = read(fd, buf + off, (size_t)st.st_size - off);
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0)
      die("read %s: %s", path, got < 0 ? strerror(errno) : "short file");
    off += (size_t)got;
  }
  close_or_die(fd, path);
  *len = off;
  return buf;
}

/* Lets the writeback of what earlier phases wrote finish before a phase
 * that times fsyncs, so that it does not pay for it. */
static void settle(void)
{
  sync();
  sleep_s(1.0);
}

/* Drops the file's clean pages from the page cache: the next read comes
 * from the disk, as after a reboot. */
static void drop_cache(const char *path)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  int rc;

  if (fd < 0)
    die("open %s: %s", path, strerror(errno));
  rc = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  if (rc != 0)
    die("posix_fadvise %s: %s", path, strerror(rc));
  close_or_die(fd, path);
}

/* Every file the benchmark may leave in bench_dir, as full paths made
 * once, so that a signal handler can remove them without formatting. */
static const char *const bench_files[] = {
    "master.journal", "work.journal", "work.journal.tmp", "peer.journal",
    "peer.journal.tmp", "commit.journal", "commit.journal.tmp"};
#define BENCH_NFILES (sizeof(bench_files) / sizeof(bench_files[0]))
static char bench_paths[BENCH_NFILES][PATH_MAX];

static void cleanup_files(void)
{
  for (size_t i = 0; i < BENCH_NFILES; i++)
    if (bench_paths[i][0])
      (void)unlink(bench_paths[i]); /* most are already gone */
}

static void cleanup_dir(void)
{
  if (!bench_dir[0])
    return;
  cleanup_files();
  if (rmdir(bench_dir) < 0)
    fprintf(stderr, "journal_bench: cannot remove %s: %s\n", bench_dir,
            strerror(errno));
  bench_dir[0] = '\0';
}

/* SIGINT, SIGTERM, SIGHUP: remove the files (unlink and rmdir are
 * async-signal-safe), then die of the signal as if not caught. */
static void on_signal(int sig)
{
  cleanup_files();
  if (bench_dir[0])
    (void)rmdir(bench_dir);
  signal(sig, SIG_DFL);
  raise(sig);
}

static void cleanup_init(void)
{
  static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
  struct sigaction sa;

  for (size_t i = 0; i < BENCH_NFILES; i++)
    path_in_dir(bench_paths[i], sizeof(bench_paths[i]), bench_files[i]);
  if (atexit(cleanup_dir) != 0)
    die("atexit failed");
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
    struct sigaction old;
    /* a signal ignored on entry (nohup, a background job) stays ignored */
    if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
      continue;
    if (sigaction(sigs[i], &sa, NULL) != 0)
      die("sigaction: %s", strerror(errno));
  }
}

/* --- series and output ------------------------------------------------- */

struct series {
  double v[BENCH_MAX_RUNS];
  int n;
};

static void series_add(struct series *s, double v)
{
  if (s->n < BENCH_MAX_RUNS)
    s->v[s->n++] = v;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void series_stats(const struct series *s, double *median, double *min,
                         double *max)
{
  double v[BENCH_MAX_RUNS];

  if (s->n == 0)
    die("a figure without runs");
  memcpy(v, s->v, sizeof(v[0]) * (size_t)s->n);
  qsort(v, (size_t)s->n, sizeof(v[0]), cmp_double);
  *min = v[0];
  *max = v[s->n - 1];
  *median = s->n % 2 ? v[s->n / 2] : (v[s->n / 2 - 1] + v[s->n / 2]) / 2;
}

/* How a row's target is judged on the median. */
enum target_kind {
  TARGET_NONE,
  TARGET_MAX,      /* ours_median <= bound */
  TARGET_RATIO_MIN /* ours_median / peer_median >= bound */
};

struct target {
  enum target_kind kind;
  double bound;
  const char *text;
};

static const struct target no_target = {TARGET_NONE, 0, ""};

static void print_header(void)
{
  printf("figure,unit,better,ours_median,ours_min,ours_max,peer,peer_median,"
         "peer_min,peer_max,runs,ratio,target,target_met\n");
}

static void print_row(const char *figure, const char *unit, bool higher,
                      const struct series *ours, const char *peer,
                      const struct series *theirs, struct target t)
{
  double om, omin, omax, pm, pmin, pmax, ratio;
  const char *met = "";

  series_stats(ours, &om, &omin, &omax);
  series_stats(theirs, &pm, &pmin, &pmax);
  ratio = pm != 0 ? om / pm : 0;
  if (t.kind == TARGET_MAX)
    met = om <= t.bound ? "yes" : "no";
  else if (t.kind == TARGET_RATIO_MIN)
    met = ratio >= t.bound ? "yes" : "no";
  printf("%s,%s,%s,%.6g,%.6g,%.6g,%s,%.6g,%.6g,%.6g,%d,%.4g,%s,%s\n", figure,
         unit, higher ? "higher" : "lower", om, omin, omax, peer, pm, pmin,
         pmax, ours->n, ratio, t.text, met);
  fflush(stdout);
}

/* A count as a short name: 1000000 -> "1M", 10000 -> "10k". */
static void count_name(char *out, size_t size, long n)
{
  if (n >= 1000000 && n % 1000000 == 0)
    snprintf(out, size, "%ldM", n / 1000000);
  else if (n >= 1000 && n % 1000 == 0)
    snprintf(out, size, "%ldk", n / 1000);
  else
    snprintf(out, size, "%ld", n);
}

/* --- the records ------------------------------------------------------- */

static int64_t relay_resource_id(long relay) { return 100 + relay / 8; }
static int relay_output(long relay) { return (int)(relay % 8); }
static uint64_t relay_key(int64_t resource_id, int output)
{
  return (uint64_t)resource_id << 16 | (uint64_t)output;
}

static void corr_of(char *out, size_t size, uint64_t cmd_seq)
{
  snprintf(out, size, "%s-%" PRIu64, BENCH_CORR_PREFIX, cmd_seq);
}

static void command_rec(struct bm_jrec *rec, uint64_t cmd_seq, long relay,
                        int status, int64_t time_ms)
{
  struct bm_jrec_command *c = &rec->u.command;

  memset(rec, 0, sizeof(*rec));
  rec->type = BM_JREC_COMMAND;
  rec->time_ms = time_ms;
  c->cmd_seq = cmd_seq;
  corr_of(c->corr, sizeof(c->corr), cmd_seq);
  snprintf(c->relay, sizeof(c->relay), "relay-%05ld", relay);
  c->resource_id = relay_resource_id(relay);
  c->output = relay_output(relay);
  c->status = status;
  c->attempt = 1;
  /* bimetri.c's "trigger %s: %s%s from %s/%s%s%s/%s%s%s" */
  snprintf(c->origin, sizeof(c->origin),
           "trigger overheat-%ld: %s from plant1/sensors-cpu%ld/temperature",
           relay % 100, status ? "FAILURE" : "OKAY", relay % 4);
}

static void append_or_die(bm_journal_t *j, const struct bm_jrec *rec)
{
  if (bm_journal_append(j, rec) != 0)
    die("bm_journal_append: %s", strerror(errno));
}

/* Writes the journal of `records` records (see the design comment), then
 * fsyncs it.  Returns its size. */
static uint64_t write_journal(const char *path, long records, long relays)
{
  struct cmd {
    uint64_t seq;
    long relay;
    int status;
  } ring[BENCH_PIPELINE + 1];
  unsigned char *desired = calloc((size_t)relays, 1);
  uint64_t rng = 0x9e3779b97f4a7c15ULL, size;
  int64_t t = 1700000000000LL;
  long written = 0;
  char err[256];
  bm_journal_t *j;
  struct bm_jrec rec;
  int fd;

  if (!desired)
    die("out of memory");
  j = bm_journal_open(path, BM_JOURNAL_SYNC_NONE, NULL, NULL, err,
                      sizeof(err));
  if (!j)
    die("bm_journal_open %s: %s", path, err);
  for (uint64_t k = 1; written < records; k++) {
    struct cmd *c = &ring[k % (BENCH_PIPELINE + 1)];

    /* A new command on a random relay, ... */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    c->seq = k;
    c->relay = (long)(rng % (uint64_t)relays);
    c->status = desired[c->relay] ^= 1;
    command_rec(&rec, c->seq, c->relay, c->status, t += 20);
    append_or_die(j, &rec);
    written++;

    /* ... the response to the one before it, ... */
    if (k > 1 && written < records) {
      const struct cmd *a = &ring[(k - 1) % (BENCH_PIPELINE + 1)];
      memset(&rec, 0, sizeof(rec));
      rec.type = BM_JREC_RESPONSE;
      rec.time_ms = t += 5;
      rec.u.response.result = 1; /* BM_RESULT_SENT */
      corr_of(rec.u.response.corr, sizeof(rec.u.response.corr), a->seq);
      append_or_die(j, &rec);
      written++;
    }
    /* ... and the confirmation of the oldest one in flight. */
    if (k > BENCH_PIPELINE && written < records) {
      const struct cmd *a = &ring[(k - BENCH_PIPELINE) % (BENCH_PIPELINE + 1)];
      memset(&rec, 0, sizeof(rec));
      rec.type = BM_JREC_CONFIRM;
      rec.time_ms = t += 5;
      rec.u.confirm.resource_id = relay_resource_id(a->relay);
      rec.u.confirm.output = relay_output(a->relay);
      rec.u.confirm.status = a->status;
      corr_of(rec.u.confirm.corr, sizeof(rec.u.confirm.corr), a->seq);
      append_or_die(j, &rec);
      written++;
    }
  }
  size = bm_journal_size(j);
  if (bm_journal_close(j) != 0)
    die("bm_journal_close: %s", strerror(errno));
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    die("open %s: %s", path, strerror(errno));
  fsync_or_die(fd, path);
  close_or_die(fd, path);
  free(desired);
  return size;
}

/* --- the replay fold (gateway.c's replay_record, minus the table) ------- */

struct fold_relay {
  char name[BM_JREC_NAME_SIZE];
  int64_t resource_id;
  int output;
  int confirmed;          /* -1 unknown */
  bool by_command;
  uint64_t confirmed_seq;
  int n_switches;         /* confirmed change times, oldest first */
  int64_t switches[BM_JREC_SWITCHES_MAX];
  bool has_pending, acked;
  struct bm_jrec_command pending;
  int64_t published_ms;
};

struct fold {
  struct fold_relay *relay;
  long n;
  struct bm_idmap by_key;  /* (resourceId, output) -> relay */
  struct bm_idmap by_corr; /* correlationId hash -> relay */
  uint64_t max_seq, records;
};

static void fold_init(struct fold *f, long relays)
{
  memset(f, 0, sizeof(*f));
  f->n = relays;
  f->relay = calloc((size_t)relays, sizeof(*f->relay));
  if (!f->relay)
    die("out of memory");
  for (long i = 0; i < relays; i++) {
    struct fold_relay *r = &f->relay[i];
    snprintf(r->name, sizeof(r->name), "relay-%05ld", i);
    r->resource_id = relay_resource_id(i);
    r->output = relay_output(i);
    r->confirmed = -1;
    if (bm_idmap_put(&f->by_key, relay_key(r->resource_id, r->output),
                     (int)i) != 0)
      die("out of memory");
  }
}

static void fold_release(struct fold *f)
{
  bm_idmap_release(&f->by_key);
  bm_idmap_release(&f->by_corr);
  free(f->relay);
  f->relay = NULL;
}

/* bm_relay_corr_seq: the sequence in "<16 lower hex>-<seq>", else 0. */
static uint64_t corr_seq(const char *corr)
{
  uint64_t seq = 0;
  const char *p;

  for (int i = 0; i < 16; i++)
    if (!((corr[i] >= '0' && corr[i] <= '9') ||
          (corr[i] >= 'a' && corr[i] <= 'f')))
      return 0;
  if (corr[16] != '-' || corr[17] < '1' || corr[17] > '9')
    return 0;
  for (p = corr + 17; *p >= '0' && *p <= '9'; p++)
    seq = seq * 10 + (uint64_t)(*p - '0');
  return *p ? 0 : seq;
}

/* gateway.c's replay_switch: remembers a confirmed change, keeping the
 * last BM_JREC_SWITCHES_MAX. */
static void fold_switch(struct fold_relay *r, int64_t ms)
{
  if (r->n_switches == BM_JREC_SWITCHES_MAX) {
    memmove(&r->switches[0], &r->switches[1],
            sizeof(r->switches[0]) * (BM_JREC_SWITCHES_MAX - 1));
    r->n_switches--;
  }
  r->switches[r->n_switches++] = ms;
}

static int fold_record(const struct bm_jrec *rec, uint64_t seq, void *ctx)
{
  struct fold *f = ctx;
  struct fold_relay *r;
  const char *corr;
  int relay;

  (void)seq;
  f->records++;
  switch (rec->type) {
  case BM_JREC_COMMAND: {
    const struct bm_jrec_command *c = &rec->u.command;
    if (c->cmd_seq > f->max_seq)
      f->max_seq = c->cmd_seq;
    relay = bm_idmap_get(&f->by_key, relay_key(c->resource_id, c->output));
    if (relay < 0)
      break;
    r = &f->relay[relay];
    r->pending = *c;
    r->published_ms = rec->time_ms;
    r->has_pending = true;
    r->acked = false;
    if (bm_idmap_put(&f->by_corr, bm_idmap_hash(c->corr), relay) != 0)
      return -1;
    break;
  }
  case BM_JREC_RESPONSE:
    corr = rec->u.response.corr;
    relay = bm_idmap_get(&f->by_corr, bm_idmap_hash(corr));
    if (relay < 0)
      break;
    r = &f->relay[relay];
    if (!r->has_pending || strcmp(r->pending.corr, corr) != 0)
      break;
    if (rec->u.response.result == 1)
      r->acked = true;
    else
      r->has_pending = false;
    break;
  case BM_JREC_TIMEOUT:
    corr = rec->u.timeout.corr;
    relay = bm_idmap_get(&f->by_corr, bm_idmap_hash(corr));
    if (relay >= 0 && f->relay[relay].has_pending &&
        strcmp(f->relay[relay].pending.corr, corr) == 0)
      f->relay[relay].has_pending = false;
    break;
  case BM_JREC_CONFIRM: {
    const struct bm_jrec_confirm *c = &rec->u.confirm;
    uint64_t cseq = c->corr[0] ? corr_seq(c->corr) : 0;
    relay = bm_idmap_get(&f->by_key, relay_key(c->resource_id, c->output));
    if (relay < 0)
      break;
    r = &f->relay[relay];
    if (r->has_pending && strcmp(r->pending.corr, c->corr) == 0)
      r->has_pending = false;
    if (cseq && cseq <= r->confirmed_seq)
      break;
    if (cseq)
      r->by_command = true;
    else if (r->confirmed != c->status)
      r->by_command = false;
    if (r->confirmed != c->status)
      fold_switch(r, rec->time_ms);
    r->confirmed = c->status;
    if (cseq)
      r->confirmed_seq = cseq;
    break;
  }
  case BM_JREC_STATE: {
    const struct bm_jrec_state *st = &rec->u.state;
    relay = bm_idmap_get(&f->by_key, relay_key(st->resource_id, st->output));
    if (relay < 0)
      break;
    r = &f->relay[relay];
    r->confirmed = st->confirmed;
    r->by_command = st->by_command != 0;
    r->confirmed_seq = st->applied_seq;
    r->n_switches = 0;
    for (int k = 0; k < st->n_switches; k++)
      fold_switch(r, st->switches[k]);
    break;
  }
  case BM_JREC_SEQ:
    if (rec->u.seq.cmd_seq > f->max_seq)
      f->max_seq = rec->u.seq.cmd_seq;
    break;
  case BM_JREC_GIVE_UP:
    break;
  }
  return 0;
}

/* gateway.c's snapshot_emit over the fold: a SEQ, a STATE per relay (with
 * its confirmed change times), and the COMMAND (and RESPONSE) of each
 * pending command. */
static int snapshot_cb(struct bm_journal_snapshot *s, void *ctx)
{
  const struct fold *f = ctx;
  int64_t now = 1800000000000LL;
  struct bm_jrec rec;

  memset(&rec, 0, sizeof(rec));
  rec.type = BM_JREC_SEQ;
  rec.time_ms = now;
  rec.u.seq.cmd_seq = f->max_seq;
  if (bm_journal_snapshot_emit(s, &rec) != 0)
    return -1;
  for (long i = 0; i < f->n; i++) {
    const struct fold_relay *r = &f->relay[i];
    struct bm_jrec_state *st = &rec.u.state;

    memset(&rec, 0, sizeof(rec));
    rec.type = BM_JREC_STATE;
    rec.time_ms = now;
    snprintf(st->relay, sizeof(st->relay), "%s", r->name);
    st->resource_id = r->resource_id;
    st->output = r->output;
    st->confirmed = r->confirmed;
    st->by_command = r->by_command;
    st->applied_seq = r->confirmed_seq;
    /* The table keeps (and saves) the last change only of a relay that no
     * MaxSwitchesPerHour drives, as none here. */
    for (int k = r->n_switches > 0 ? r->n_switches - 1 : 0; k < r->n_switches;
         k++)
      st->switches[st->n_switches++] = r->switches[k];
    if (st->n_switches)
      rec.time_ms = st->switches[st->n_switches - 1];
    if (bm_journal_snapshot_emit(s, &rec) != 0)
      return -1;
    if (!r->has_pending)
      continue;
    memset(&rec, 0, sizeof(rec));
    rec.type = BM_JREC_COMMAND;
    rec.time_ms = r->published_ms;
    rec.u.command = r->pending;
    if (bm_journal_snapshot_emit(s, &rec) != 0)
      return -1;
    if (!r->acked)
      continue;
    memset(&rec, 0, sizeof(rec));
    rec.type = BM_JREC_RESPONSE;
    rec.time_ms = now;
    rec.u.response.result = 1;
    snprintf(rec.u.response.corr, sizeof(rec.u.response.corr), "%s",
             r->pending.corr);
    if (bm_journal_snapshot_emit(s, &rec) != 0)
      return -1;
  }
  return 0;
}

/* --- replay, read and their peers -------------------------------------- */

/* Seconds for bm_journal_open (JournalSync always, as deployed) to replay
 * the journal into a fresh fold; checks every record was seen. */
static double time_open_replay(const char *path, long records, long relays)
{
  struct fold f;
  char err[256];
  bm_journal_t *j;
  double t0, t1;

  fold_init(&f, relays);
  t0 = now_s();
  j = bm_journal_open(path, BM_JOURNAL_SYNC_ALWAYS, fold_record, &f, err,
                      sizeof(err));
  t1 = now_s();
  if (!j)
    die("bm_journal_open %s: %s", path, err);
  if (f.records != (uint64_t)records)
    die("replay saw %" PRIu64 " records, not %ld", f.records, records);
  if (bm_journal_close(j) != 0)
    die("bm_journal_close: %s", strerror(errno));
  fold_release(&f);
  return t1 - t0;
}

static double time_read(const char *path, long records, long relays)
{
  struct bm_journal_info info;
  struct fold f;
  char err[256];
  double t0, t1;

  fold_init(&f, relays);
  t0 = now_s();
  if (bm_journal_read(path, fold_record, &f, &info, err, sizeof(err)) != 0)
    die("bm_journal_read %s: %s", path, err);
  t1 = now_s();
  if (info.records != (uint64_t)records || f.records != (uint64_t)records)
    die("read saw %" PRIu64 " records, not %ld", info.records, records);
  fold_release(&f);
  return t1 - t0;
}

static volatile uint64_t peer_sink; /* keeps the peers' work alive */

/* Seconds for a read() loop over the file, 64 KiB at a time, summing the
 * bytes, or (crc) computing their CRC-32C. */
static double time_read_loop(const char *path, bool crc)
{
  static unsigned char buf[BENCH_READ_BUF];
  uint64_t sum = 0;
  uint32_t c = 0;
  double t0, t1;
  ssize_t got;
  int fd;

  t0 = now_s();
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    die("open %s: %s", path, strerror(errno));
  while ((got = read(fd, buf, sizeof(buf))) != 0) {
    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0)
      die("read %s: %s", path, strerror(errno));
    if (crc)
      c = bm_crc32c(c, buf, (size_t)got);
    else
      for (ssize_t i = 0; i < got; i++)
        sum += buf[i];
  }
  close_or_die(fd, path);
  t1 = now_s();
  peer_sink += sum + c;
  return t1 - t0;
}

/* --- compaction and its peer ------------------------------------------- */

/* Seconds for bm_journal_compact of a fresh copy of master; *size gets the
 * compacted size and, on the first call, *snapshot the compacted bytes. */
static double time_compact(const char *master, long records, long relays,
                           uint64_t *size, unsigned char **snapshot,
                           size_t *snapshot_len)
{
  char work[PATH_MAX], err[256];
  struct fold f;
  bm_journal_t *j;
  double t0, t1;

  path_in_dir(work, sizeof(work), "work.journal");
  copy_file(master, work);
  fold_init(&f, relays);
  j = bm_journal_open(work, BM_JOURNAL_SYNC_ALWAYS, fold_record, &f, err,
                      sizeof(err));
  if (!j)
    die("bm_journal_open %s: %s", work, err);
  if (f.records != (uint64_t)records)
    die("replay saw %" PRIu64 " records, not %ld", f.records, records);
  t0 = now_s();
  if (bm_journal_compact(j, snapshot_cb, &f) != 0)
    die("bm_journal_compact: %s", strerror(errno));
  t1 = now_s();
  *size = bm_journal_size(j);
  if (bm_journal_close(j) != 0)
    die("bm_journal_close: %s", strerror(errno));
  if (!*snapshot)
    *snapshot = slurp(work, snapshot_len);
  unlink_if_there(work);
  fold_release(&f);
  return t1 - t0;
}

/* Seconds for the durable replace alone: the snapshot's bytes written to
 * a temporary file, fsync, rename over a copy of the old journal, the old
 * file closed (freeing it), directory fsync. */
static double time_replace(const char *master, const unsigned char *snapshot,
                           size_t len)
{
  char peer[PATH_MAX], tmp[PATH_MAX];
  int old, fd;
  double t0, t1;

  path_in_dir(peer, sizeof(peer), "peer.journal");
  path_in_dir(tmp, sizeof(tmp), "peer.journal.tmp");
  copy_file(master, peer);
  old = open(peer, O_RDWR | O_CLOEXEC); /* held like the journal's fd */
  if (old < 0)
    die("open %s: %s", peer, strerror(errno));
  t0 = now_s();
  fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    die("open %s: %s", tmp, strerror(errno));
  write_all(fd, snapshot, len);
  fsync_or_die(fd, tmp);
  if (rename(tmp, peer) < 0)
    die("rename %s: %s", tmp, strerror(errno));
  close_or_die(old, peer);
  fsync_dir();
  t1 = now_s();
  close_or_die(fd, peer);
  unlink_if_there(peer);
  return t1 - t0;
}

/* --- group commit and its peer ----------------------------------------- */

struct commit {
  pthread_mutex_t mu;
  pthread_cond_t work;   /* the writer: something is queued */
  pthread_cond_t *done;  /* per trigger: its command is durable */
  int *queue;            /* trigger of ticket t at queue[t % threads] */
  int threads;
  bm_journal_t *j;
  bool stop;
  uint64_t queued;       /* tickets handed out (one per command) */
  uint64_t taken;        /* tickets the writer has taken */
  uint64_t durable;      /* tickets durable (and published) */
  uint64_t syncs;        /* bm_journal_sync calls */
  bool batched;          /* group commit; else fsync per write */
};

/* What a trigger thread gets: the benchmark and its own index. */
struct trigger {
  struct commit *c;
  int index;
};

static void commit_append(struct commit *c, uint64_t cmd_seq)
{
  struct bm_jrec rec;
  long relay = (long)(cmd_seq % 1000);

  command_rec(&rec, cmd_seq, relay, (int)(cmd_seq & 1), 1700000000000LL);
  append_or_die(c->j, &rec);
}

static void commit_sync(struct commit *c)
{
  if (bm_journal_sync(c->j) != 0)
    die("bm_journal_sync: %s", strerror(errno));
}

/* The gateway thread: takes whatever is queued, one append per command,
 * one sync for all, then publishes: wakes each trigger whose command left
 * (and only those, as a publish concerns one command). */
static void *commit_writer(void *arg)
{
  struct commit *c = arg;

  pthread_mutex_lock(&c->mu);
  for (;;) {
    uint64_t from, to;

    while (c->queued == c->taken && !c->stop)
      pthread_cond_wait(&c->work, &c->mu);
    if (c->stop)
      break;
    from = c->taken;
    to = c->queued;
    c->taken = to;
    pthread_mutex_unlock(&c->mu);

    for (uint64_t t = from; t < to; t++)
      commit_append(c, t + 1);
    commit_sync(c);

    pthread_mutex_lock(&c->mu);
    c->syncs++;
    c->durable = to;
    /* queue[] of these tickets stays put: their triggers wait for this */
    for (uint64_t t = from; t < to; t++)
      pthread_cond_signal(&c->done[c->queue[t % (uint64_t)c->threads]]);
  }
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

/* A trigger: one command at a time, each waited for until durable. */
static void *commit_trigger(void *arg)
{
  const struct trigger *me = arg;
  struct commit *c = me->c;

  pthread_mutex_lock(&c->mu);
  while (!c->stop) {
    uint64_t ticket = c->queued++; /* 0-based; durable counts tickets */
    if (c->batched) {
      c->queue[ticket % (uint64_t)c->threads] = me->index;
      pthread_cond_signal(&c->work);
      while (c->durable <= ticket && !c->stop)
        pthread_cond_wait(&c->done[me->index], &c->mu);
    } else {
      /* fsync per write, under the mutex */
      commit_append(c, ticket + 1);
      commit_sync(c);
      c->syncs++;
      c->durable = ticket + 1;
      /* let the other triggers at the mutex between commands */
      pthread_mutex_unlock(&c->mu);
      pthread_mutex_lock(&c->mu);
    }
  }
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

/* Commands made durable per second with `threads` triggers; *per_sync gets
 * the mean commands per fsync. */
static double time_commit(int threads, bool batched, double seconds,
                          double *per_sync)
{
  char path[PATH_MAX], err[256];
  pthread_t writer, *tid = calloc((size_t)threads, sizeof(*tid));
  struct trigger *trig = calloc((size_t)threads, sizeof(*trig));
  struct commit c;
  uint64_t d0, d1, s0, s1;
  double t0, t1;
  int rc;

  memset(&c, 0, sizeof(c));
  c.threads = threads;
  c.batched = batched;
  c.done = calloc((size_t)threads, sizeof(*c.done));
  c.queue = calloc((size_t)threads, sizeof(*c.queue));
  if (!tid || !trig || !c.done || !c.queue)
    die("out of memory");
  if ((rc = pthread_mutex_init(&c.mu, NULL)) != 0 ||
      (rc = pthread_cond_init(&c.work, NULL)) != 0)
    die("pthread init: %s", strerror(rc));
  for (int i = 0; i < threads; i++)
    if ((rc = pthread_cond_init(&c.done[i], NULL)) != 0)
      die("pthread_cond_init: %s", strerror(rc));
  path_in_dir(path, sizeof(path), "commit.journal");
  unlink_if_there(path);
  c.j = bm_journal_open(path, BM_JOURNAL_SYNC_ALWAYS, NULL, NULL, err,
                        sizeof(err));
  if (!c.j)
    die("bm_journal_open %s: %s", path, err);

  if (batched && (rc = pthread_create(&writer, NULL, commit_writer, &c)) != 0)
    die("pthread_create: %s", strerror(rc));
  for (int i = 0; i < threads; i++) {
    trig[i].c = &c;
    trig[i].index = i;
    if ((rc = pthread_create(&tid[i], NULL, commit_trigger, &trig[i])) != 0)
      die("pthread_create: %s", strerror(rc));
  }

  sleep_s(BENCH_WARMUP_S);
  pthread_mutex_lock(&c.mu);
  d0 = c.durable;
  s0 = c.syncs;
  t0 = now_s();
  pthread_mutex_unlock(&c.mu);
  sleep_s(seconds);
  pthread_mutex_lock(&c.mu);
  d1 = c.durable;
  s1 = c.syncs;
  t1 = now_s();
  c.stop = true;
  pthread_cond_broadcast(&c.work);
  for (int i = 0; i < threads; i++)
    pthread_cond_broadcast(&c.done[i]);
  pthread_mutex_unlock(&c.mu);

  for (int i = 0; i < threads; i++)
    if ((rc = pthread_join(tid[i], NULL)) != 0)
      die("pthread_join: %s", strerror(rc));
  if (batched && (rc = pthread_join(writer, NULL)) != 0)
    die("pthread_join: %s", strerror(rc));
  if (bm_journal_close(c.j) != 0)
    die("bm_journal_close: %s", strerror(errno));
  unlink_if_there(path);
  for (int i = 0; i < threads; i++)
    pthread_cond_destroy(&c.done[i]);
  pthread_cond_destroy(&c.work);
  pthread_mutex_destroy(&c.mu);
  free(c.queue);
  free(c.done);
  free(trig);
  free(tid);
  *per_sync = s1 > s0 ? (double)(d1 - d0) / (double)(s1 - s0) : 0;
  return (double)(d1 - d0) / (t1 - t0);
}

/* Commands made durable per second by one thread alone, `batch` appends
 * then one bm_journal_sync: the journal's own group commit, without the
 * triggers' hand-offs. */
static double time_batches(int batch, double seconds)
{
  char path[PATH_MAX], err[256];
  uint64_t n = 0;
  double t0, t1;
  bm_journal_t *j;

  path_in_dir(path, sizeof(path), "commit.journal");
  unlink_if_there(path);
  j = bm_journal_open(path, BM_JOURNAL_SYNC_ALWAYS, NULL, NULL, err,
                      sizeof(err));
  if (!j)
    die("bm_journal_open %s: %s", path, err);
  t0 = now_s();
  do {
    struct bm_jrec rec;

    for (int i = 0; i < batch; i++) {
      n++;
      command_rec(&rec, n, (long)(n % 1000), (int)(n & 1), 1700000000000LL);
      append_or_die(j, &rec);
    }
    if (bm_journal_sync(j) != 0)
      die("bm_journal_sync: %s", strerror(errno));
    t1 = now_s();
  } while (t1 - t0 < seconds);
  if (bm_journal_close(j) != 0)
    die("bm_journal_close: %s", strerror(errno));
  unlink_if_there(path);
  return (double)n / (t1 - t0);
}

/* --- main -------------------------------------------------------------- */

static void usage(FILE *f)
{
  fprintf(f,
          "usage: journal_bench [--records N] [--relays N] [--runs N]\n"
          "                     [--seconds S] [--concurrency N] [--dir DIR]\n"
          "defaults: 1000000 records, 10000 relays, 5 runs, 3 s per group\n"
          "commit run, 64 concurrent commands, DIR $BENCH_DIR or /tmp\n");
}

static long parse_long(const char *opt, const char *s, long min, long max)
{
  char *end;
  long v;

  errno = 0;
  v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < min || v > max)
    die("%s wants an integer in [%ld, %ld], not \"%s\"", opt, min, max, s);
  return v;
}

static void parse_options(int argc, char **argv, struct options *o)
{
  const char *env = getenv("BENCH_DIR");

  o->records = 1000000;
  o->relays = 10000;
  o->runs = 5;
  o->seconds = 3;
  o->concurrency = 64;
  o->dir = env && *env ? env : "/tmp";
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;

    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      exit(0);
    }
    if (!v) {
      usage(stderr);
      die("unknown option or missing value: \"%s\"", a);
    }
    if (strcmp(a, "--records") == 0)
      o->records = parse_long(a, v, 10, 100000000);
    else if (strcmp(a, "--relays") == 0)
      o->relays = parse_long(a, v, 1, 1000000);
    else if (strcmp(a, "--runs") == 0)
      o->runs = (int)parse_long(a, v, 1, BENCH_MAX_RUNS);
    else if (strcmp(a, "--seconds") == 0)
      o->seconds = (double)parse_long(a, v, 1, 600);
    else if (strcmp(a, "--concurrency") == 0)
      o->concurrency = (int)parse_long(a, v, 1, 1024);
    else if (strcmp(a, "--dir") == 0)
      o->dir = v;
    else {
      usage(stderr);
      die("unknown option \"%s\"", a);
    }
    i++;
  }
}

int main(int argc, char **argv)
{
  struct options o;
  struct series replay_warm = {0}, replay_warm_rate = {0}, replay_cold = {0},
                read_warm = {0}, loop_warm = {0}, loop_warm_rate = {0},
                crc_warm = {0}, crc_warm_rate = {0}, loop_cold = {0},
                crc_cold = {0}, loop_read_rate = {0}, crc_read_rate = {0},
                compact = {0}, replace = {0}, compact_size = {0},
                before_size = {0}, gc_many = {0}, fpw_many = {0},
                gc_one = {0}, fpw_one = {0}, batch_many = {0},
                batch_peer = {0}, alone = {0};
  char master[PATH_MAX], name[160], nrec[32], nrel[32];
  unsigned char *snapshot = NULL;
  size_t snapshot_len = 0;
  uint64_t jsize;
  double t;

  parse_options(argc, argv, &o);
  if (snprintf(bench_dir, sizeof(bench_dir), "%s/journal_bench.XXXXXX",
               o.dir) >= (int)sizeof(bench_dir))
    die("--dir too long");
  if (!mkdtemp(bench_dir)) {
    int saved = errno;
    bench_dir[0] = '\0';
    die("mkdtemp under %s: %s", o.dir, strerror(saved));
  }
  cleanup_init();
  count_name(nrec, sizeof(nrec), o.records);
  count_name(nrel, sizeof(nrel), o.relays);
  path_in_dir(master, sizeof(master), "master.journal");

  /* 1. The journal. */
  t = now_s();
  jsize = write_journal(master, o.records, o.relays);
  progress("wrote %ld records (%" PRIu64 " bytes) in %.2f s in %s", o.records,
           jsize, now_s() - t, bench_dir);

  /* 2, 3. Replay and read, warm and cold, interleaved with their peers. */
  /* One untimed pass out of the page cache first: on a VM the host may
   * cache the disk, and the first cold read alone would pay for that. */
  drop_cache(master);
  (void)time_read_loop(master, false);
  for (int run = 0; run < o.runs; run++) {
    double s;

    s = time_open_replay(master, o.records, o.relays);
    series_add(&replay_warm, s);
    series_add(&replay_warm_rate, (double)o.records / s);
    s = time_read_loop(master, false);
    series_add(&loop_warm, s);
    series_add(&loop_warm_rate, (double)o.records / s);
    s = time_read_loop(master, true);
    series_add(&crc_warm, s);
    series_add(&crc_warm_rate, (double)o.records / s);
    s = time_read(master, o.records, o.relays);
    series_add(&read_warm, (double)o.records / s);
    series_add(&loop_read_rate, (double)o.records / time_read_loop(master,
                                                                   false));
    series_add(&crc_read_rate, (double)o.records / time_read_loop(master,
                                                                  true));

    drop_cache(master);
    series_add(&replay_cold, time_open_replay(master, o.records, o.relays));
    drop_cache(master);
    series_add(&loop_cold, time_read_loop(master, false));
    drop_cache(master);
    series_add(&crc_cold, time_read_loop(master, true));
    (void)time_read_loop(master, false); /* warm again */
    progress("replay run %d/%d: warm %.3f s, cold %.3f s", run + 1, o.runs,
             replay_warm.v[run], replay_cold.v[run]);
  }

  print_header();
  snprintf(name, sizeof(name), "replay %s records warm (open)", nrec);
  print_row(name, "s", false, &replay_warm, "read() loop", &loop_warm,
            (struct target){TARGET_MAX, 1.0, "< 1 s"});
  print_row(name, "s", false, &replay_warm, "read()+CRC-32C loop",
            &crc_warm, (struct target){TARGET_MAX, 1.0, "< 1 s"});
  print_row(name, "records/s", true, &replay_warm_rate, "read() loop",
            &loop_warm_rate, no_target);
  print_row(name, "records/s", true, &replay_warm_rate,
            "read()+CRC-32C loop", &crc_warm_rate, no_target);
  snprintf(name, sizeof(name), "replay %s records cold (open)", nrec);
  print_row(name, "s", false, &replay_cold, "read() loop", &loop_cold,
            (struct target){TARGET_MAX, 1.0, "< 1 s"});
  print_row(name, "s", false, &replay_cold, "read()+CRC-32C loop", &crc_cold,
            (struct target){TARGET_MAX, 1.0, "< 1 s"});
  snprintf(name, sizeof(name), "read %s records warm (bm_journal_read)",
           nrec);
  print_row(name, "records/s", true, &read_warm, "read() loop",
            &loop_read_rate, no_target);
  print_row(name, "records/s", true, &read_warm, "read()+CRC-32C loop",
            &crc_read_rate, no_target);

  /* 4. Compaction, interleaved with the durable replace, which goes first
   * every other run. */
  settle();
  for (int run = 0; run < o.runs; run++) {
    uint64_t size = 0;

    if (run % 2 == 1 && snapshot)
      series_add(&replace, time_replace(master, snapshot, snapshot_len));
    series_add(&compact, time_compact(master, o.records, o.relays, &size,
                                      &snapshot, &snapshot_len));
    series_add(&compact_size, (double)size);
    series_add(&before_size, (double)jsize);
    if (run % 2 == 0)
      series_add(&replace, time_replace(master, snapshot, snapshot_len));
    progress("compaction run %d/%d: %.4f s vs %.4f s, %" PRIu64 " bytes",
             run + 1, o.runs, compact.v[run], replace.v[run], size);
  }
  snprintf(name, sizeof(name), "compact %s records to %s relays", nrec,
           nrel);
  print_row(name, "s", false, &compact, "write+fsync+rename of same bytes",
            &replace, no_target);
  snprintf(name, sizeof(name), "compacted size (%s relays)", nrel);
  print_row(name, "bytes", false, &compact_size, "journal before", &before_size,
            no_target);
  free(snapshot);
  unlink_if_there(master);

  settle();
  /* 5. Group commit, interleaved with fsync per write, which goes first
   * every other run so that neither always follows the same thing. */
  for (int run = 0; run < o.runs; run++) {
    double per_sync, peer_per_sync, v, pv;

    for (int k = 0; k < 2; k++) {
      if ((k == 0) == (run % 2 == 0)) {
        v = time_commit(o.concurrency, true, o.seconds, &per_sync);
        series_add(&gc_many, v);
        series_add(&batch_many, per_sync);
        v = time_commit(1, true, o.seconds, &per_sync);
        series_add(&gc_one, v);
      } else {
        pv = time_commit(o.concurrency, false, o.seconds, &peer_per_sync);
        series_add(&fpw_many, pv);
        series_add(&batch_peer, peer_per_sync);
        pv = time_commit(1, false, o.seconds, &peer_per_sync);
        series_add(&fpw_one, pv);
      }
    }
    series_add(&alone, time_batches(o.concurrency, o.seconds));
    progress("commit run %d/%d: %d concurrent %.0f vs %.0f cmd/s (%.1f per "
             "fsync), 1 concurrent %.0f vs %.0f cmd/s, batches of %d alone "
             "%.0f cmd/s",
             run + 1, o.runs, o.concurrency, gc_many.v[run], fpw_many.v[run],
             batch_many.v[run], gc_one.v[run], fpw_one.v[run], o.concurrency,
             alone.v[run]);
  }
  snprintf(name, sizeof(name), "group commit %d concurrent (sync always)",
           o.concurrency);
  print_row(name, "commands/s", true, &gc_many, "fsync per write", &fpw_many,
            (struct target){TARGET_RATIO_MIN, 10.0, ">= 10x peer"});
  snprintf(name, sizeof(name), "commands per fsync %d concurrent",
           o.concurrency);
  print_row(name, "commands", true, &batch_many, "fsync per write",
            &batch_peer, no_target);
  print_row("group commit 1 concurrent (sync always)", "commands/s", true,
            &gc_one, "fsync per write", &fpw_one, no_target);
  snprintf(name, sizeof(name), "batches of %d in one thread (sync always)",
           o.concurrency);
  print_row(name, "commands/s", true, &alone, "fsync per write 1 thread",
            &fpw_one, no_target);
  return 0;
}
