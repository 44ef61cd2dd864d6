/*
 * journal_test.c - unit tests of the correlation journal (src/journal.h).
 *
 * Everything happens in a fresh mktemp -d directory that is removed at the
 * end.  The fault tests follow LevelDB's log_test and Redis's aof tests:
 * journals cut at every byte of their last records, bit flips at every
 * byte, zero-filled and garbage tails, corruption in the middle, damaged
 * headers, sequence gaps and oversized lengths, each checked for exactly
 * which records replay, what the file is cut to, what is kept aside and
 * what is logged.  I/O failures are injected through struct bm_journal_io
 * (SQLite's ioerr idea) into appends, syncs and every step of compaction.
 * A seeded random test compares replay of randomly damaged journals with
 * the list of records that went in.
 */
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "crc32c.h"
#include "log.h"
#include "message.h"
#include "tap.h"

#define HDR BM_JOURNAL_HEADER_SIZE

/* --- randomness, files, logging ---------------------------------------- */

/* xorshift64*: deterministic, seeded. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint64_t rng(void)
{
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1DULL;
}
static size_t rnd(size_t n) { return n ? (size_t)(rng() % n) : 0; }

static char tmpdir[PATH_MAX];

/* dir/name into out (PATH_MAX). */
static void in_dir(char *out, const char *name)
{
  int n = snprintf(out, PATH_MAX, "%s/%s", tmpdir, name);
  if (n < 0 || n >= PATH_MAX) {
    fprintf(stderr, "path too long\n");
    exit(99);
  }
}

static void with_suffix(char *out, const char *path, const char *suffix)
{
  int n = snprintf(out, PATH_MAX, "%s%s", path, suffix);
  if (n < 0 || n >= PATH_MAX) {
    fprintf(stderr, "path too long\n");
    exit(99);
  }
}

static bool exists(const char *path)
{
  struct stat st;
  return lstat(path, &st) == 0;
}

static long long fsize(const char *path)
{
  struct stat st;
  return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* Reads a whole file into a malloc'd buffer (at most 64 MiB). */
static unsigned char *slurp(const char *path, size_t *len)
{
  unsigned char *buf = NULL;
  long long size = fsize(path);
  FILE *f = NULL;

  *len = 0;
  if (size < 0 || size > 64 * 1024 * 1024)
    return NULL;
  buf = malloc((size_t)size + 1);
  f = fopen(path, "rb");
  if (!buf || !f || fread(buf, 1, (size_t)size, f) != (size_t)size) {
    free(buf);
    buf = NULL;
  } else {
    *len = (size_t)size;
  }
  if (f && fclose(f) != 0) {
    free(buf);
    buf = NULL;
  }
  return buf;
}

/* Replaces path's content with len bytes (no fsync: tests only). */
static void spit(const char *path, const void *buf, size_t len)
{
  FILE *f = fopen(path, "wb");
  if (!f || (len > 0 && fwrite(buf, 1, len, f) != len) || fclose(f) != 0) {
    fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
    exit(99);
  }
}

static bool same_bytes(const char *path, const unsigned char *want,
                       size_t len)
{
  size_t got_len = 0;
  unsigned char *got = slurp(path, &got_len);
  bool same = got && got_len == len && memcmp(got, want, len) == 0;
  free(got);
  return same;
}

static void remove_if_there(const char *path)
{
  if (unlink(path) < 0 && errno != ENOENT) {
    fprintf(stderr, "cannot remove %s: %s\n", path, strerror(errno));
    exit(99);
  }
}

/* Removes the journal and everything the module may put next to it. */
static void remove_journal(const char *path)
{
  char other[PATH_MAX], suffix[32];
  remove_if_there(path);
  with_suffix(other, path, ".tmp");
  remove_if_there(other);
  for (int i = 0; i < BM_JOURNAL_CORRUPT_MAX; i++) {
    if (i == 0)
      snprintf(suffix, sizeof(suffix), ".corrupt");
    else
      snprintf(suffix, sizeof(suffix), ".corrupt.%d", i);
    with_suffix(other, path, suffix);
    remove_if_there(other);
  }
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* Log lines, captured. */
static int log_lines;
static int log_level;
static char log_last[1024];

static void log_sink(int level, const char *line, void *ctx)
{
  (void)ctx;
  log_lines++;
  log_level = level;
  snprintf(log_last, sizeof(log_last), "%s", line);
}

static void log_reset(void)
{
  log_lines = 0;
  log_level = 0;
  log_last[0] = '\0';
}

/* --- I/O fault injection ----------------------------------------------- */

static struct {
  int pwrite_calls, fsync_calls, ftruncate_calls, rename_calls;
  int fail_pwrite_at; /* 1-based call number that fails; 0: none */
  int pwrite_errno;
  bool pwrite_zero;   /* the failing call returns 0 instead */
  size_t short_max;   /* > 0: each call writes at most this much */
  int eintr_every;    /* > 0: every n-th call fails with EINTR */
  int fail_fsync_at, fsync_errno;
  int fail_ftruncate_at;
  int fail_rename_at;
  size_t sizes[16]; /* the sizes asked of the first 16 pwrite calls */
} io;

static void io_reset(void) { memset(&io, 0, sizeof(io)); }

static ssize_t t_pwrite(int fd, const void *buf, size_t n, off_t off)
{
  if (io.pwrite_calls < 16)
    io.sizes[io.pwrite_calls] = n;
  io.pwrite_calls++;
  if (io.fail_pwrite_at && io.pwrite_calls >= io.fail_pwrite_at) {
    if (io.pwrite_zero)
      return 0;
    errno = io.pwrite_errno;
    return -1;
  }
  if (io.eintr_every && io.pwrite_calls % io.eintr_every == 0) {
    errno = EINTR;
    return -1;
  }
  if (io.short_max && n > io.short_max)
    n = io.short_max;
  return pwrite(fd, buf, n, off);
}

static int t_fsync(int fd)
{
  io.fsync_calls++;
  if (io.fail_fsync_at && io.fsync_calls == io.fail_fsync_at) {
    errno = io.fsync_errno ? io.fsync_errno : EIO;
    return -1;
  }
  return fsync(fd);
}

static int t_ftruncate(int fd, off_t len)
{
  io.ftruncate_calls++;
  if (io.fail_ftruncate_at && io.ftruncate_calls == io.fail_ftruncate_at) {
    errno = EIO;
    return -1;
  }
  return ftruncate(fd, len);
}

static int t_rename(const char *from, const char *to)
{
  io.rename_calls++;
  if (io.fail_rename_at && io.rename_calls == io.fail_rename_at) {
    errno = EXDEV;
    return -1;
  }
  return rename(from, to);
}

static const struct bm_journal_io test_io = {t_pwrite, t_fsync, t_ftruncate,
                                             t_rename};

/* --- records ----------------------------------------------------------- */

/* len bytes of non-NUL characters (all 255 of them, cycling) and a NUL. */
static void fill(char *s, size_t size, size_t len, unsigned seed)
{
  if (len >= size)
    len = size - 1;
  for (size_t i = 0; i < len; i++)
    s[i] = (char)(1 + (seed + i * 7) % 255);
  s[len] = '\0';
}

/* A record of every type with every string at its maximum length and the
 * integers at their extremes (or, with !max, at the other extreme). */
static struct bm_jrec make_rec(enum bm_jrec_type type, unsigned seed, bool max)
{
  struct bm_jrec r;
  memset(&r, 0, sizeof(r));
  r.type = type;
  r.time_ms = max ? INT64_MAX : INT64_MIN + seed;
  switch (type) {
  case BM_JREC_COMMAND:
    r.u.command.cmd_seq = max ? UINT64_MAX : seed;
    fill(r.u.command.corr, BM_JREC_CORR_SIZE, max ? 127 : 1, seed);
    fill(r.u.command.relay, BM_JREC_NAME_SIZE, max ? 63 : 0, seed + 1);
    r.u.command.resource_id = max ? INT64_MAX : INT64_MIN;
    r.u.command.output = max ? 65535 : 0;
    r.u.command.status = max ? 1 : 0;
    r.u.command.attempt = max ? INT32_MAX : 0;
    fill(r.u.command.origin, BM_JREC_ORIGIN_SIZE, max ? 127 : 0, seed + 2);
    break;
  case BM_JREC_RESPONSE:
    fill(r.u.response.corr, BM_JREC_CORR_SIZE, max ? 127 : 1, seed);
    r.u.response.result = max ? BM_RESULT_UNAUTHORIZED : BM_RESULT_SENT;
    fill(r.u.response.reason, BM_JREC_REASON_SIZE, max ? 255 : 0, seed + 3);
    break;
  case BM_JREC_CONFIRM:
    fill(r.u.confirm.corr, BM_JREC_CORR_SIZE, max ? 127 : 0, seed);
    r.u.confirm.resource_id = max ? INT64_MAX : -1;
    r.u.confirm.output = max ? 65535 : 0;
    r.u.confirm.status = max ? 1 : 0;
    break;
  case BM_JREC_TIMEOUT:
    fill(r.u.timeout.corr, BM_JREC_CORR_SIZE, max ? 127 : 1, seed);
    break;
  case BM_JREC_GIVE_UP:
    fill(r.u.give_up.relay, BM_JREC_NAME_SIZE, max ? 63 : 0, seed);
    r.u.give_up.resource_id = max ? INT64_MAX : 0;
    r.u.give_up.output = max ? 65535 : 0;
    break;
  case BM_JREC_STATE:
    fill(r.u.state.relay, BM_JREC_NAME_SIZE, max ? 63 : 0, seed);
    r.u.state.resource_id = max ? INT64_MAX : INT64_MIN;
    r.u.state.output = max ? 65535 : 0;
    r.u.state.confirmed = max ? 1 : -1;
    r.u.state.applied_seq = max ? UINT64_MAX : 0;
    r.u.state.n_applied = max ? BM_JREC_APPLIED_MAX : 0;
    for (int i = 0; i < r.u.state.n_applied; i++)
      fill(r.u.state.applied[i], BM_JREC_CORR_SIZE, 127, seed + (unsigned)i);
    r.u.state.by_command = max ? 1 : 0;
    r.u.state.n_switches = max ? BM_JREC_SWITCHES_MAX : 0;
    for (int i = 0; i < r.u.state.n_switches; i++)
      r.u.state.switches[i] = i == 0 ? INT64_MIN : INT64_MAX - i;
    break;
  case BM_JREC_SEQ:
    r.u.seq.cmd_seq = max ? UINT64_MAX : 0;
    break;
  }
  return r;
}

/* A random valid record. */
static struct bm_jrec rand_rec(void)
{
  struct bm_jrec r;
  unsigned seed = (unsigned)rng();
  memset(&r, 0, sizeof(r));
  r.type = (enum bm_jrec_type)(1 + rnd(7));
  r.time_ms = (int64_t)rng();
  switch (r.type) {
  case BM_JREC_COMMAND:
    r.u.command.cmd_seq = rng();
    fill(r.u.command.corr, BM_JREC_CORR_SIZE, 1 + rnd(127), seed);
    fill(r.u.command.relay, BM_JREC_NAME_SIZE, rnd(64), seed + 1);
    r.u.command.resource_id = (int64_t)rng();
    r.u.command.output = (int)rnd(65536);
    r.u.command.status = (int)rnd(2);
    r.u.command.attempt = (int)rnd(10);
    fill(r.u.command.origin, BM_JREC_ORIGIN_SIZE, rnd(128), seed + 2);
    break;
  case BM_JREC_RESPONSE:
    fill(r.u.response.corr, BM_JREC_CORR_SIZE, 1 + rnd(127), seed);
    r.u.response.result = 1 + (int)rnd(5);
    fill(r.u.response.reason, BM_JREC_REASON_SIZE, rnd(256), seed + 3);
    break;
  case BM_JREC_CONFIRM:
    fill(r.u.confirm.corr, BM_JREC_CORR_SIZE, rnd(128), seed);
    r.u.confirm.resource_id = (int64_t)rng();
    r.u.confirm.output = (int)rnd(65536);
    r.u.confirm.status = (int)rnd(2);
    break;
  case BM_JREC_TIMEOUT:
    fill(r.u.timeout.corr, BM_JREC_CORR_SIZE, 1 + rnd(127), seed);
    break;
  case BM_JREC_GIVE_UP:
    fill(r.u.give_up.relay, BM_JREC_NAME_SIZE, rnd(64), seed);
    r.u.give_up.resource_id = (int64_t)rng();
    r.u.give_up.output = (int)rnd(65536);
    break;
  case BM_JREC_STATE:
    fill(r.u.state.relay, BM_JREC_NAME_SIZE, rnd(64), seed);
    r.u.state.resource_id = (int64_t)rng();
    r.u.state.output = (int)rnd(65536);
    r.u.state.confirmed = (int)rnd(3) - 1;
    r.u.state.applied_seq = rng();
    r.u.state.n_applied = (int)rnd(BM_JREC_APPLIED_MAX + 1);
    for (int i = 0; i < r.u.state.n_applied; i++)
      fill(r.u.state.applied[i], BM_JREC_CORR_SIZE, 1 + rnd(127),
           seed + (unsigned)i);
    r.u.state.n_switches = (int)rnd(BM_JREC_SWITCHES_MAX + 1);
    for (int i = 0; i < r.u.state.n_switches; i++)
      r.u.state.switches[i] = (int64_t)rng();
    break;
  case BM_JREC_SEQ:
    r.u.seq.cmd_seq = rng();
    break;
  }
  return r;
}

/* Field-wise equality: structs are not compared with memcmp (padding). */
static bool rec_eq(const struct bm_jrec *a, const struct bm_jrec *b)
{
  if (a->type != b->type || a->time_ms != b->time_ms)
    return false;
  switch (a->type) {
  case BM_JREC_COMMAND: {
    const struct bm_jrec_command *x = &a->u.command, *y = &b->u.command;
    return x->cmd_seq == y->cmd_seq && !strcmp(x->corr, y->corr) &&
           !strcmp(x->relay, y->relay) && x->resource_id == y->resource_id &&
           x->output == y->output && x->status == y->status &&
           x->attempt == y->attempt && !strcmp(x->origin, y->origin);
  }
  case BM_JREC_RESPONSE:
    return !strcmp(a->u.response.corr, b->u.response.corr) &&
           a->u.response.result == b->u.response.result &&
           !strcmp(a->u.response.reason, b->u.response.reason);
  case BM_JREC_CONFIRM:
    return !strcmp(a->u.confirm.corr, b->u.confirm.corr) &&
           a->u.confirm.resource_id == b->u.confirm.resource_id &&
           a->u.confirm.output == b->u.confirm.output &&
           a->u.confirm.status == b->u.confirm.status;
  case BM_JREC_TIMEOUT:
    return !strcmp(a->u.timeout.corr, b->u.timeout.corr);
  case BM_JREC_GIVE_UP:
    return !strcmp(a->u.give_up.relay, b->u.give_up.relay) &&
           a->u.give_up.resource_id == b->u.give_up.resource_id &&
           a->u.give_up.output == b->u.give_up.output;
  case BM_JREC_STATE: {
    const struct bm_jrec_state *x = &a->u.state, *y = &b->u.state;
    if (strcmp(x->relay, y->relay) || x->resource_id != y->resource_id ||
        x->output != y->output || x->confirmed != y->confirmed ||
        x->applied_seq != y->applied_seq || x->n_applied != y->n_applied)
      return false;
    for (int i = 0; i < x->n_applied; i++)
      if (strcmp(x->applied[i], y->applied[i]))
        return false;
    return true;
  }
  case BM_JREC_SEQ:
    return a->u.seq.cmd_seq == b->u.seq.cmd_seq;
  }
  return false;
}

/* Replayed records, collected. */
#define COLL_MAX 100000
struct coll {
  struct bm_jrec *v;
  uint64_t *seq;
  size_t n, cap;
  size_t fail_at; /* > 0: the callback fails on this record (1-based) */
};

static int collect(const struct bm_jrec *rec, uint64_t seq, void *ctx)
{
  struct coll *c = ctx;
  if (c->fail_at && c->n + 1 == c->fail_at)
    return -1;
  if (c->n == c->cap) {
    size_t cap = c->cap ? 2 * c->cap : 64;
    struct bm_jrec *v;
    uint64_t *s;
    if (cap > COLL_MAX)
      return -1;
    v = realloc(c->v, cap * sizeof(*v));
    if (!v)
      return -1;
    c->v = v;
    s = realloc(c->seq, cap * sizeof(*s));
    if (!s)
      return -1;
    c->seq = s;
    c->cap = cap;
  }
  c->v[c->n] = *rec;
  c->seq[c->n] = seq;
  c->n++;
  return 0;
}

static void coll_reset(struct coll *c)
{
  c->n = 0;
  c->fail_at = 0;
}

static void coll_release(struct coll *c)
{
  free(c->v);
  free(c->seq);
  memset(c, 0, sizeof(*c));
}

/* The first n collected records equal want[0..n) and are numbered
 * first_seq, first_seq+1, ... */
static bool coll_matches(const struct coll *c, const struct bm_jrec *want,
                         size_t n, uint64_t first_seq)
{
  if (c->n != n)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!rec_eq(&c->v[i], &want[i]) || c->seq[i] != first_seq + i)
      return false;
  return true;
}

/* Closes a journal whose close must succeed; failures are counted and
 * reported at the end. */
static int close_failures;
static void jclose(bm_journal_t *j)
{
  if (bm_journal_close(j) != 0) {
    close_failures++;
    diag("close failed: %s", strerror(errno));
  }
}

/* The first n collected records equal want[0..n), whatever follows. */
static bool coll_prefix(const struct coll *c, const struct bm_jrec *want,
                        size_t n)
{
  if (c->n < n)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!rec_eq(&c->v[i], &want[i]))
      return false;
  return true;
}

/* --- building journals ------------------------------------------------- */

/* A journal file with recs[0..n), appended through the module; off[i] is
 * where record i starts, off[n] the file's end.  Returns its bytes
 * (malloc'd) and their count in *len. */
static unsigned char *build(const char *path, const struct bm_jrec *recs,
                            size_t n, uint64_t *off, size_t *len)
{
  char err[256];
  bm_journal_t *j;

  remove_journal(path);
  j = bm_journal_open(path, BM_JOURNAL_SYNC_NONE, NULL, NULL, err,
                      sizeof(err));
  if (!j) {
    fprintf(stderr, "build: %s\n", err);
    exit(99);
  }
  off[0] = bm_journal_size(j);
  for (size_t i = 0; i < n; i++) {
    if (bm_journal_append(j, &recs[i]) < 0) {
      fprintf(stderr, "build: append: %s\n", strerror(errno));
      exit(99);
    }
    off[i + 1] = bm_journal_size(j);
  }
  if (bm_journal_close(j) < 0) {
    fprintf(stderr, "build: close: %s\n", strerror(errno));
    exit(99);
  }
  return slurp(path, len);
}

/* Opens path (mode none) replaying into c; NULL on failure. */
static bm_journal_t *reopen(const char *path, struct coll *c, char *err,
                            size_t errlen)
{
  coll_reset(c);
  return bm_journal_open(path, BM_JOURNAL_SYNC_NONE, collect, c, err,
                         errlen);
}

/* How many of the records at off[] are wholly within the first d bytes. */
static size_t records_before(const uint64_t *off, size_t n, uint64_t d)
{
  size_t k = 0;
  while (k < n && off[k + 1] <= d)
    k++;
  return k;
}

static void put_le(unsigned char *p, uint64_t v, int bytes)
{
  for (int i = 0; i < bytes; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

/* A hand-made record: length field len_field (which may lie), type, seq,
 * payload, and a correct CRC.  Returns its size. */
static size_t craft(unsigned char *out, uint32_t len_field, int type,
                    uint64_t seq, const unsigned char *payload, size_t plen)
{
  put_le(out, len_field, 4);
  out[4] = (unsigned char)type;
  put_le(out + 5, seq, 8);
  if (plen > 0)
    memcpy(out + 13, payload, plen);
  put_le(out + 13 + plen, bm_crc32c(0, out, 13 + plen), 4);
  return 17 + plen;
}

static bool contains(const char *hay, const char *needle)
{
  return strstr(hay, needle) != NULL;
}

/* --- the tests --------------------------------------------------------- */

static const enum bm_jrec_type all_types[] = {
    BM_JREC_COMMAND, BM_JREC_RESPONSE, BM_JREC_CONFIRM, BM_JREC_TIMEOUT,
    BM_JREC_GIVE_UP, BM_JREC_STATE,    BM_JREC_SEQ};
#define N_TYPES (sizeof(all_types) / sizeof(all_types[0]))

static void test_names(void)
{
  enum bm_journal_sync_mode m = BM_JOURNAL_SYNC_NONE;

  is_str(bm_jrec_type_name(BM_JREC_COMMAND), "command", "type name command");
  is_str(bm_jrec_type_name(BM_JREC_SEQ), "seq", "type name seq");
  ok(bm_jrec_type_name((enum bm_jrec_type)0) == NULL, "type 0 has no name");
  ok(bm_journal_sync_mode_parse("Always", &m) == 0 &&
         m == BM_JOURNAL_SYNC_ALWAYS,
     "sync mode \"Always\" parses");
  ok(bm_journal_sync_mode_parse("FULL", &m) == 0 && m == BM_JOURNAL_SYNC_FULL,
     "sync mode \"FULL\" parses");
  ok(bm_journal_sync_mode_parse("none", &m) == 0 && m == BM_JOURNAL_SYNC_NONE,
     "sync mode \"none\" parses");
  ok(bm_journal_sync_mode_parse("sometimes", &m) == -1 &&
         m == BM_JOURNAL_SYNC_NONE,
     "sync mode \"sometimes\" is refused, *out untouched");
}

/* The sample file in journal.h's design comment is what the code reads. */
static void test_documented_sample(void)
{
  static const unsigned char sample[61] = {
      0x42, 0x4d, 0x4a, 0x31, 0x01, 0x00, 0x00, 0x00, 0x00, 0x68, 0xe5, 0xcf,
      0x8b, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x7b, 0x9f, 0x90, 0x76, 0x10, 0x00, 0x00, 0x00, 0x07, 0x01, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x7b, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00,
      0x00, 0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xb4, 0x56, 0x6f,
      0xcd};
  char path[PATH_MAX], err[256];
  struct coll c = {0};
  struct bm_journal_info info;
  struct bm_jrec want;

  in_dir(path, "sample");
  spit(path, sample, sizeof(sample));
  memset(&want, 0, sizeof(want));
  want.type = BM_JREC_SEQ;
  want.time_ms = 1700000000123;
  want.u.seq.cmd_seq = 42;
  is_int(bm_journal_read(path, collect, &c, &info, err, sizeof(err)), 0,
         "documented sample: reads");
  ok(coll_matches(&c, &want, 1, 1), "documented sample: one SEQ record, "
                                    "cmd_seq 42, seq 1");
  is_int(info.created_ms, 1700000000000, "documented sample: creation time");
  is_int(info.valid_end, 61, "documented sample: valid to the end");
  is_str(info.stop, "end of file", "documented sample: stop reason");
  remove_journal(path);
  coll_release(&c);
}

static void test_roundtrip(void)
{
  char path[PATH_MAX], dir[PATH_MAX], err[256];
  struct bm_jrec recs[2 * N_TYPES];
  struct coll c = {0};
  struct stat st;
  bm_journal_t *j;
  size_t n = 0;
  int bad = 0;

  /* Parent directories are created, 0700; the file is 0600. */
  in_dir(dir, "a");
  in_dir(path, "a/b/c/gw.journal");
  log_reset();
  j = bm_journal_open(path, BM_JOURNAL_SYNC_ALWAYS, collect, &c, err,
                      sizeof(err));
  ok(j != NULL, "open creates a journal below missing directories (%s)", err);
  if (!j)
    return;
  is_int(c.n, 0, "a new journal replays nothing");
  is_int(bm_journal_size(j), HDR, "a new journal is just the header");
  is_int(log_lines, 0, "creating a journal logs nothing");
  ok(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0700,
     "created directories are 0700");
  ok(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600,
     "the journal file is 0600");

  for (size_t t = 0; t < N_TYPES; t++) {
    recs[n++] = make_rec(all_types[t], 11 * (unsigned)t, true);
    recs[n++] = make_rec(all_types[t], 13 * (unsigned)t, false);
  }
  for (size_t i = 0; i < n; i++)
    bad += bm_journal_append(j, &recs[i]) != 0;
  is_int(bad, 0, "every record type appends, at maximum and minimum sizes");
  is_int(bm_journal_sync(j), 0, "sync");
  is_int(bm_journal_close(j), 0, "close");

  j = reopen(path, &c, err, sizeof(err));
  ok(j != NULL, "reopen (%s)", err);
  ok(coll_matches(&c, recs, n, 1),
     "reopen replays every record exactly, numbered from 1");
  is_int(bm_journal_size(j), fsize(path), "size is the file's size");
  is_int(bm_journal_close(j), 0, "close");
  is_int(bm_journal_close(NULL), 0, "closing NULL is a no-op");
  remove_journal(path);
  coll_release(&c);
}

static void test_invalid_records(void)
{
  char path[PATH_MAX], err[256];
  struct bm_jrec r;
  bm_journal_t *j;
  uint64_t size;
  int refused = 0, tried = 0;

  in_dir(path, "invalid");
  j = bm_journal_open(path, BM_JOURNAL_SYNC_NONE, NULL, NULL, err,
                      sizeof(err));
  ok(j != NULL, "open (%s)", err);
  if (!j)
    return;
  size = bm_journal_size(j);

#define REFUSE(mutation)                                                      \
  do {                                                                        \
    r = make_rec(BM_JREC_COMMAND, 1, true);                                   \
    mutation;                                                                 \
    errno = 0;                                                                \
    tried++;                                                                  \
    refused += bm_journal_append(j, &r) == -1 && errno == EINVAL;             \
  } while (0)
  REFUSE(r.type = (enum bm_jrec_type)0);
  REFUSE(r.type = (enum bm_jrec_type)8);
  REFUSE(memset(r.u.command.corr, 'x', sizeof(r.u.command.corr)));
  REFUSE(r.u.command.corr[0] = '\0');
  REFUSE(memset(r.u.command.relay, 'x', sizeof(r.u.command.relay)));
  REFUSE(memset(r.u.command.origin, 'x', sizeof(r.u.command.origin)));
  REFUSE(r.u.command.status = 2);
  REFUSE(r.u.command.status = -1);
  REFUSE(r.u.command.output = 65536);
  REFUSE(r.u.command.output = -1);
  REFUSE(r.u.command.attempt = -1);
  REFUSE((r = make_rec(BM_JREC_RESPONSE, 1, true), r.u.response.result = 0));
  REFUSE((r = make_rec(BM_JREC_RESPONSE, 1, true), r.u.response.result = 6));
  REFUSE((r = make_rec(BM_JREC_RESPONSE, 1, true),
          memset(r.u.response.reason, 'x', sizeof(r.u.response.reason))));
  REFUSE((r = make_rec(BM_JREC_TIMEOUT, 1, true), r.u.timeout.corr[0] = 0));
  REFUSE((r = make_rec(BM_JREC_CONFIRM, 1, true), r.u.confirm.status = 3));
  REFUSE((r = make_rec(BM_JREC_STATE, 1, true), r.u.state.confirmed = 2));
  REFUSE((r = make_rec(BM_JREC_STATE, 1, true), r.u.state.n_applied = 9));
  REFUSE((r = make_rec(BM_JREC_STATE, 1, true), r.u.state.n_applied = -1));
  REFUSE((r = make_rec(BM_JREC_STATE, 1, true), r.u.state.n_switches = 65));
  REFUSE((r = make_rec(BM_JREC_STATE, 1, true), r.u.state.n_switches = -1));
  REFUSE((r = make_rec(BM_JREC_STATE, 1, true), r.u.state.applied[3][0] = 0));
#undef REFUSE
  is_int(refused, tried, "records breaking an invariant fail with EINVAL");
  is_int(bm_journal_size(j), size, "... and write nothing");
  is_int(fsize(path), (long long)size, "... not even to the file");
  r = make_rec(BM_JREC_TIMEOUT, 1, true);
  is_int(bm_journal_append(j, &r), 0, "a valid record still appends");
  is_int(bm_journal_close(j), 0, "close");
  remove_journal(path);
}

/* A journal of BASE_N records whose last three are of different types,
 * the largest ones among them (COMMAND and STATE at their maximum size);
 * the truncation and bit-flip tests work on every byte of those three. */
#define BASE_N 12
static void base_records(struct bm_jrec *recs)
{
  for (int i = 0; i < BASE_N - 3; i++)
    recs[i] = make_rec(all_types[i % N_TYPES], (unsigned)i, i % 2 == 0);
  recs[BASE_N - 3] = make_rec(BM_JREC_COMMAND, 100, true);
  recs[BASE_N - 2] = make_rec(BM_JREC_STATE, 101, true);
  recs[BASE_N - 1] = make_rec(BM_JREC_RESPONSE, 102, false);
  fill(recs[BASE_N - 1].u.response.reason, BM_JREC_REASON_SIZE, 30, 4);
}

static void test_truncation(void)
{
  char path[PATH_MAX], corrupt[PATH_MAX], err[256], want[64];
  struct bm_jrec recs[BASE_N];
  uint64_t off[BASE_N + 1];
  struct coll c = {0};
  unsigned char *bytes;
  size_t len;
  int bad_replay = 0, bad_size = 0, bad_log = 0, bad_open = 0, corrupts = 0;
  int cuts = 0;

  in_dir(path, "cut");
  with_suffix(corrupt, path, ".corrupt");
  base_records(recs);
  bytes = build(path, recs, BASE_N, off, &len);
  ok(bytes && len == off[BASE_N], "built a journal of %d records", BASE_N);
  if (!bytes)
    return;

  for (uint64_t cut = off[BASE_N - 3]; cut <= off[BASE_N]; cut++) {
    size_t k = records_before(off, BASE_N, cut);
    uint64_t dropped = cut - off[k];
    bm_journal_t *j;

    spit(path, bytes, (size_t)cut);
    log_reset();
    j = reopen(path, &c, err, sizeof(err));
    cuts++;
    if (!j) {
      bad_open++;
      diag("cut at %" PRIu64 ": %s", cut, err);
      continue;
    }
    bad_replay += !coll_matches(&c, recs, k, 1);
    bad_size += fsize(path) != (long long)off[k] ||
                bm_journal_size(j) != off[k];
    snprintf(want, sizeof(want), "dropped %" PRIu64 " bytes", dropped);
    if (dropped == 0)
      bad_log += log_lines != 0;
    else
      bad_log += log_lines != 1 || !contains(log_last, want) ||
                 log_level != BM_LOG_WARNING;
    corrupts += exists(corrupt);
    /* The journal goes on where the valid records end. */
    if (k < BASE_N && bm_journal_append(j, &recs[k]) != 0)
      bad_size++;
    if (bm_journal_close(j) != 0)
      bad_open++;
    if (k < BASE_N && !same_bytes(path, bytes, (size_t)off[k + 1]))
      bad_size++;
    remove_journal(path);
  }
  diag("cut a %zu-byte journal at %d offsets", len, cuts);
  is_int(bad_open, 0, "every cut journal opens");
  is_int(bad_replay, 0, "every cut replays exactly the whole records before "
                        "it");
  is_int(bad_size, 0, "every cut is truncated to the last whole record, and "
                      "appending goes on from there");
  is_int(bad_log, 0, "every dropped tail is logged once, with its byte count");
  is_int(corrupts, 0, "a torn tail is not kept aside");
  free(bytes);
  coll_release(&c);
}

static void test_bit_flips(void)
{
  char path[PATH_MAX], corrupt[PATH_MAX], err[256];
  struct bm_jrec recs[BASE_N];
  uint64_t off[BASE_N + 1];
  struct coll c = {0};
  unsigned char *bytes;
  size_t len;
  int bad_replay = 0, bad_size = 0, bad_copy = 0, bad_open = 0, flips = 0;

  in_dir(path, "flip");
  with_suffix(corrupt, path, ".corrupt");
  base_records(recs);
  bytes = build(path, recs, BASE_N, off, &len);
  if (!bytes)
    return;

  for (uint64_t at = off[BASE_N - 3]; at < off[BASE_N]; at++) {
    size_t k = records_before(off, BASE_N, at); /* the flipped record */
    bool mid = k < BASE_N - 1;
    bm_journal_t *j;

    bytes[at] ^= (unsigned char)(1u << (at % 8));
    spit(path, bytes, len);
    log_reset();
    j = reopen(path, &c, err, sizeof(err));
    flips++;
    if (!j) {
      bad_open++;
      diag("flip at %" PRIu64 ": %s", at, err);
    } else {
      bad_replay += !coll_matches(&c, recs, k, 1);
      bad_size += fsize(path) != (long long)off[k];
      /* Valid records after the flipped one: the original goes aside. */
      bad_copy += mid ? !same_bytes(corrupt, bytes, len) : exists(corrupt);
      bad_copy += log_lines != 1 ||
                  log_level != (mid ? BM_LOG_ERR : BM_LOG_WARNING);
      bad_open += bm_journal_close(j) != 0;
    }
    bytes[at] ^= (unsigned char)(1u << (at % 8));
    remove_journal(path);
  }
  diag("flipped one bit in each of %d bytes", flips);
  is_int(bad_open, 0, "every flipped journal opens");
  is_int(bad_replay, 0, "replay stops right before the flipped record");
  is_int(bad_size, 0, "the journal is cut right before the flipped record");
  is_int(bad_copy, 0, "a flip with valid records after it keeps a copy of "
                      "the original in .corrupt, one at the end does not; "
                      "one log line each");
  free(bytes);
  coll_release(&c);
}

/* Tails of zeros and of garbage. */
static void test_tails(void)
{
  char path[PATH_MAX], corrupt[PATH_MAX], err[256];
  struct bm_jrec recs[BASE_N];
  uint64_t off[BASE_N + 1];
  struct coll c = {0};
  unsigned char *bytes, *big;
  size_t len;
  bm_journal_t *j;

  in_dir(path, "tails");
  with_suffix(corrupt, path, ".corrupt");
  base_records(recs);
  bytes = build(path, recs, BASE_N, off, &len);
  if (!bytes)
    return;
  big = calloc(1, len + 200 * 1024);
  if (!big)
    return;

  /* A zero-filled block after the records (a power loss after the size
   * was updated but before the data hit the disk). */
  memcpy(big, bytes, len);
  spit(path, big, len + 4096);
  log_reset();
  j = reopen(path, &c, err, sizeof(err));
  ok(j && coll_matches(&c, recs, BASE_N, 1),
     "zero tail: every record replays");
  is_int(fsize(path), len, "zero tail: cut off");
  ok(log_lines == 1 && contains(log_last, "dropped 4096 bytes"),
     "zero tail: one line says 4096 bytes were dropped (%s)", log_last);
  ok(!exists(corrupt), "zero tail: nothing kept aside");
  jclose(j);

  /* Zeros over the last two records, in place. */
  memcpy(big, bytes, len);
  memset(big + off[BASE_N - 2], 0, len - off[BASE_N - 2]);
  spit(path, big, len);
  log_reset();
  j = reopen(path, &c, err, sizeof(err));
  ok(j && coll_matches(&c, recs, BASE_N - 2, 1),
     "zeroed last records: the ones before replay");
  is_int(fsize(path), off[BASE_N - 2], "zeroed last records: cut off");
  is_int(log_lines, 1, "zeroed last records: one log line");
  jclose(j);

  /* Random garbage after the records. */
  memcpy(big, bytes, len);
  for (size_t i = len; i < len + 5000; i++)
    big[i] = (unsigned char)rng();
  spit(path, big, len + 5000);
  log_reset();
  j = reopen(path, &c, err, sizeof(err));
  ok(j && coll_matches(&c, recs, BASE_N, 1),
     "garbage tail: every record replays");
  is_int(fsize(path), len, "garbage tail: cut off");
  ok(log_lines == 1 && contains(log_last, "dropped 5000 bytes"),
     "garbage tail: one line says 5000 bytes were dropped (%s)", log_last);
  ok(!exists(corrupt), "garbage tail: nothing kept aside");
  jclose(j);

  /* 200 KiB of garbage, more than the reader's window. */
  memcpy(big, bytes, len);
  for (size_t i = len; i < len + 200 * 1024; i++)
    big[i] = (unsigned char)rng();
  spit(path, big, len + 200 * 1024);
  log_reset();
  j = reopen(path, &c, err, sizeof(err));
  ok(j && coll_matches(&c, recs, BASE_N, 1) && fsize(path) == (long long)len &&
         log_lines == 1 && contains(log_last, "dropped 204800 bytes") &&
         !exists(corrupt),
     "200 KiB garbage tail: cut off, one line (%s)", log_last);
  jclose(j);

  /* Garbage that starts like a record: a plausible length and type, then
   * junk, several times over. */
  memcpy(big, bytes, len);
  for (size_t i = 0; i < 20; i++) {
    unsigned char *p = big + len + 40 * i;
    put_le(p, 23, 4);
    p[4] = BM_JREC_CONFIRM;
    put_le(p + 5, BASE_N + 1 + i, 8);
    for (int b = 13; b < 40; b++)
      p[b] = (unsigned char)rng();
  }
  spit(path, big, len + 800);
  log_reset();
  j = reopen(path, &c, err, sizeof(err));
  ok(j && coll_matches(&c, recs, BASE_N, 1) && fsize(path) == (long long)len,
     "record-like garbage tail: every record replays, the tail is cut");
  ok(!exists(corrupt), "record-like garbage tail: nothing kept aside");
  jclose(j);

  remove_journal(path);
  free(big);
  free(bytes);
  coll_release(&c);
}

static void test_mid_corruption(void)
{
  char path[PATH_MAX], corrupt[PATH_MAX], corrupt1[PATH_MAX], err[256];
  char name[PATH_MAX], suffix[32];
  struct bm_jrec recs[BASE_N];
  uint64_t off[BASE_N + 1];
  struct coll c = {0};
  unsigned char *bytes;
  size_t len;
  bm_journal_t *j;

  in_dir(path, "mid");
  with_suffix(corrupt, path, ".corrupt");
  with_suffix(corrupt1, path, ".corrupt.1");
  base_records(recs);
  bytes = build(path, recs, BASE_N, off, &len);
  if (!bytes)
    return;

  /* One byte of record 4's payload damaged: records 5.. are intact. */
  bytes[off[4] + 20] ^= 0x55;
  spit(path, bytes, len);
  log_reset();
  j = reopen(path, &c, err, sizeof(err));
  ok(j != NULL, "corrupt middle: opens (%s)", err);
  ok(coll_matches(&c, recs, 4, 1), "corrupt middle: replay stops there "
                                   "(%zu records)", c.n);
  is_int(fsize(path), off[4], "corrupt middle: the journal is cut there");
  ok(same_bytes(corrupt, bytes, len),
     "corrupt middle: .corrupt holds the original bytes");
  ok(log_lines == 1 && log_level == BM_LOG_ERR &&
         contains(log_last, ".corrupt") && contains(log_last, "bad checksum"),
     "corrupt middle: one error line names the copy and the cause (%s)",
     log_last);
  /* The journal goes on after the cut. */
  ok(j && bm_journal_append(j, &recs[4]) == 0 && bm_journal_close(j) == 0,
     "corrupt middle: appending goes on");
  j = reopen(path, &c, err, sizeof(err));
  ok(j && coll_matches(&c, recs, 5, 1), "corrupt middle: reopen replays "
                                        "the records kept and the new one");
  jclose(j);

  /* A second corruption gets the next name; the first copy stays. */
  spit(path, bytes, len);
  j = reopen(path, &c, err, sizeof(err));
  ok(j && same_bytes(corrupt1, bytes, len) &&
         same_bytes(corrupt, bytes, len),
     "a second corrupt journal is copied to .corrupt.1");
  jclose(j);

  /* With every name taken the open fails and touches nothing. */
  for (int i = 2; i < BM_JOURNAL_CORRUPT_MAX; i++) {
    snprintf(suffix, sizeof(suffix), ".corrupt.%d", i);
    with_suffix(name, path, suffix);
    spit(name, "x", 1);
  }
  spit(path, bytes, len);
  log_reset();
  j = reopen(path, &c, err, sizeof(err));
  ok(j == NULL && contains(err, "no .corrupt name is free"),
     "no free .corrupt name: open fails (%s)", err);
  ok(same_bytes(path, bytes, len), "no free .corrupt name: the journal is "
                                   "untouched");
  jclose(j);

  /* 150 KiB of zeros (more than the reader's window) between records 6
   * and 7: the records after the gap are still found, so it is corruption
   * in the middle. */
  remove_journal(path);
  bytes[off[4] + 20] ^= 0x55; /* undo the damage above */
  {
    size_t gap = 150 * 1024, glen = len + gap;
    unsigned char *g = calloc(1, glen);
    if (g) {
      memcpy(g, bytes, (size_t)off[7]);
      memcpy(g + off[7] + gap, bytes + off[7], (size_t)(len - off[7]));
      spit(path, g, glen);
      log_reset();
      j = reopen(path, &c, err, sizeof(err));
      ok(j && coll_matches(&c, recs, 7, 1) && fsize(path) == (long long)off[7]
             && same_bytes(corrupt, g, glen) && log_level == BM_LOG_ERR,
         "records after 150 KiB of zeros: corruption in the middle, kept "
         "aside");
      jclose(j);
    }
    free(g);
  }
  remove_journal(path);
  free(bytes);
  coll_release(&c);
}

static void test_headers(void)
{
  char path[PATH_MAX], corrupt[PATH_MAX], err[256];
  unsigned char hdr[HDR + 64];
  struct coll c = {0};
  struct bm_jrec r = make_rec(BM_JREC_SEQ, 1, true);
  bm_journal_t *j;

  in_dir(path, "hdr");
  with_suffix(corrupt, path, ".corrupt");

  /* Empty file: a new journal, quietly. */
  remove_journal(path);
  spit(path, "", 0);
  log_reset();
  j = reopen(path, &c, err, sizeof(err));
  ok(j && c.n == 0 && fsize(path) == HDR && !exists(corrupt) &&
         log_lines == 0,
     "an empty file becomes a new journal, nothing logged (%s)", err);
  ok(j && bm_journal_append(j, &r) == 0, "... which appends");
  jclose(j);
  j = reopen(path, &c, err, sizeof(err));
  ok(j && coll_matches(&c, &r, 1, 1), "... and replays");
  jclose(j);

  /* Header only. */
  remove_journal(path);
  j = reopen(path, &c, err, sizeof(err));
  jclose(j);
  log_reset();
  j = reopen(path, &c, err, sizeof(err));
  ok(j && c.n == 0 && fsize(path) == HDR && log_lines == 0,
     "a file of just a header opens empty, nothing logged");
  jclose(j);

  /* Damaged headers: the whole file goes aside, a new journal starts. */
  struct {
    const char *what;
    size_t at; /* byte changed, or the length for "short" */
    bool truncate;
  } cases[] = {{"bad magic", 0, false},
               {"version 2", 4, false},
               {"bad header checksum", 10, false},
               {"short header", 20, true},
               {"one byte", 1, true}};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    size_t len;
    unsigned char *bytes;

    remove_journal(path);
    j = reopen(path, &c, err, sizeof(err));
    if (j && bm_journal_append(j, &r) != 0)
      diag("append: %s", strerror(errno));
    jclose(j);
    bytes = slurp(path, &len);
    if (!bytes)
      continue;
    if (cases[i].truncate) {
      len = cases[i].at;
    } else if (cases[i].at == 4) {
      /* version 2 with a correct header CRC: only the version is wrong */
      put_le(bytes + 4, 2, 4);
      put_le(bytes + 24, bm_crc32c(0, bytes, 24), 4);
    } else {
      bytes[cases[i].at] ^= 0x20;
    }
    spit(path, bytes, len);
    log_reset();
    j = reopen(path, &c, err, sizeof(err));
    ok(j && c.n == 0 && fsize(path) == HDR,
       "%s: opens as a new, empty journal (%s)", cases[i].what, err);
    ok(same_bytes(corrupt, bytes, len), "%s: the old file is kept aside "
                                        "as .corrupt", cases[i].what);
    ok(log_lines == 1 && log_level == BM_LOG_ERR,
       "%s: one error line (%s)", cases[i].what, log_last);
    ok(j && bm_journal_append(j, &r) == 0 && bm_journal_close(j) == 0,
       "%s: the new journal appends", cases[i].what);
    j = reopen(path, &c, err, sizeof(err));
    ok(j && coll_matches(&c, &r, 1, 1), "%s: and replays", cases[i].what);
    jclose(j);
    free(bytes);
  }
  /* The reader refuses a bad header and leaves it. */
  memset(hdr, 'Z', sizeof(hdr));
  spit(path, hdr, sizeof(hdr));
  ok(bm_journal_read(path, NULL, NULL, NULL, err, sizeof(err)) == -1 &&
         contains(err, "bad magic") && same_bytes(path, hdr, sizeof(hdr)),
     "read-only: a bad header is an error, the file untouched (%s)", err);
  remove_journal(path);
  coll_release(&c);
}

/* Hand-made records with a correct CRC but something else wrong. */
static void test_crafted(void)
{
  char path[PATH_MAX], err[256];
  struct bm_jrec recs[3];
  uint64_t off[4];
  struct coll c = {0};
  struct bm_journal_info info;
  unsigned char *bytes, *buf, pl[BM_JOURNAL_MAX_PAYLOAD + 64];
  size_t len;

  in_dir(path, "crafted");
  for (int i = 0; i < 3; i++)
    recs[i] = make_rec(BM_JREC_TIMEOUT, (unsigned)i, true);
  bytes = build(path, recs, 3, off, &len);
  buf = malloc(len + 2 * BM_JOURNAL_MAX_RECORD + 64);
  if (!bytes || !buf)
    return;

  /* A valid TIMEOUT payload: time, corr "abc". */
  memset(pl, 0, sizeof(pl));
  put_le(pl, 1234, 8);
  put_le(pl + 8, 3, 2);
  memcpy(pl + 10, "abc", 3);

  struct {
    const char *what, *stop;
    uint32_t len_field;
    int type;
    uint64_t seq;
    size_t plen;
    void (*tweak)(unsigned char *pl);
  } cases[] = {
      {"sanity: a correct crafted record", "end of file", 13, 4, 4, 13, NULL},
      {"sequence gap", "wrong sequence number", 13, 4, 5, 13, NULL},
      {"repeated sequence", "wrong sequence number", 13, 4, 3, 13, NULL},
      {"type 0", "unknown type", 13, 0, 4, 13, NULL},
      {"type 8", "unknown type", 13, 8, 4, 13, NULL},
      {"length one over the maximum", "length beyond maximum",
       BM_JOURNAL_MAX_PAYLOAD + 1, 4, 4, BM_JOURNAL_MAX_PAYLOAD + 1, NULL},
      {"length 0xFFFFFFFF", "length beyond maximum", 0xFFFFFFFFu, 4, 4, 13,
       NULL},
      {"maximum length of junk", "invalid payload", BM_JOURNAL_MAX_PAYLOAD, 4,
       4, BM_JOURNAL_MAX_PAYLOAD, NULL},
      {"payload longer than its fields", "invalid payload", 14, 4, 4, 14,
       NULL},
      {"payload shorter than its fields", "invalid payload", 12, 4, 4, 12,
       NULL},
      {"empty payload", "invalid payload", 0, 4, 4, 0, NULL},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    size_t n, k = i == 0 ? 4 : 3;
    bm_journal_t *j;
    struct bm_jrec four;

    memcpy(buf, bytes, len);
    n = len + craft(buf + len, cases[i].len_field, cases[i].type,
                    cases[i].seq, pl, cases[i].plen);
    spit(path, buf, n);
    coll_reset(&c);
    ok(bm_journal_read(path, collect, &c, &info, err, sizeof(err)) == 0 &&
           c.n == k && info.valid_end == (i == 0 ? n : len) &&
           !strcmp(info.stop, cases[i].stop) && same_bytes(path, buf, n),
       "%s: the reader stops with \"%s\" (got %zu records, \"%s\") and "
       "changes nothing",
       cases[i].what, cases[i].stop, c.n, info.stop);
    log_reset();
    j = reopen(path, &c, err, sizeof(err));
    memset(&four, 0, sizeof(four));
    four.type = BM_JREC_TIMEOUT;
    four.time_ms = 1234;
    strcpy(four.u.timeout.corr, "abc");
    ok(j && c.n == k && coll_prefix(&c, recs, 3) &&
           (i > 0 || rec_eq(&c.v[3], &four)) &&
           fsize(path) == (long long)(i == 0 ? n : len) &&
           log_lines == (i == 0 ? 0 : 1),
       "%s: open replays %zu records, keeps %s", cases[i].what, k,
       i == 0 ? "everything" : "the valid ones");
    jclose(j);
    remove_journal(path);
  }

  /* Field-level damage with a correct CRC. */
  struct {
    const char *what;
    int type;
    size_t plen;
    unsigned char p[64];
  } fields[] = {
      /* time, corr length 128 (one over) */
      {"correlationId of 128 bytes", 4, 10, {0, 0, 0, 0, 0, 0, 0, 0, 128, 0}},
      /* time, corr "a\0b" */
      {"NUL inside a string", 4, 13, {0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 'a', 0,
                                      'b'}},
      /* time, corr "" where one is required */
      {"empty required correlationId", 4, 10, {0}},
      /* CONFIRM: time, rid, output, status 2, corr "" */
      {"status 2", 3, 21, {[18] = 2}},
      /* RESPONSE: time, result 9, corr "a", reason "" */
      {"result 9", 2, 14, {[8] = 9, [9] = 1, [11] = 'a'}},
      /* STATE: time rid output confirmed(-2) by_command applied_seq
       * relay"" n=0 */
      {"confirmed -2", 6, 32, {[18] = 0xFE}},
      /* STATE with by_command 2 */
      {"by_command 2", 6, 32, {[19] = 2}},
      /* STATE with n_applied 9 and nothing after it */
      {"nine applied correlationIds", 6, 32, {[30] = 9}},
      /* STATE with 65 switch times announced */
      {"65 switch times", 6, 32, {[31] = 65}},
      /* COMMAND with attempt 2^31 */
      {"attempt 2^31", 1, 38, {[30] = 0x80, [31] = 1, [33] = 'a'}},
  };
  for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
    size_t n;
    memcpy(buf, bytes, len);
    n = len + craft(buf + len, (uint32_t)fields[i].plen, fields[i].type, 4,
                    fields[i].p, fields[i].plen);
    spit(path, buf, n);
    coll_reset(&c);
    ok(bm_journal_read(path, collect, &c, &info, err, sizeof(err)) == 0 &&
           c.n == 3 && !strcmp(info.stop, "invalid payload"),
       "%s: the record is invalid (%s)", fields[i].what, info.stop);
    remove_journal(path);
  }
  /* The sanity of the field cases: the same shapes with valid values. */
  {
    unsigned char ok_state[32] = {[18] = 0xFF, [19] = 1, [30] = 0, [31] = 0};
    size_t n;
    memcpy(buf, bytes, len);
    n = len + craft(buf + len, 32, 6, 4, ok_state, 32);
    spit(path, buf, n);
    coll_reset(&c);
    ok(bm_journal_read(path, collect, &c, &info, err, sizeof(err)) == 0 &&
           c.n == 4 && c.v[3].u.state.confirmed == -1 &&
           c.v[3].u.state.by_command == 1,
       "a crafted STATE with confirmed -1 is valid (%s)", info.stop);
    remove_journal(path);
  }
  free(buf);
  free(bytes);
  coll_release(&c);
}

/* A snapshot: a SEQ, some STATEs, a pending COMMAND with its RESPONSE. */
struct snap {
  struct bm_jrec recs[300];
  size_t n;
  int fail; /* the callback returns this */
  int emit_errors;
};

static int snapshot(struct bm_journal_snapshot *s, void *ctx)
{
  struct snap *sn = ctx;
  for (size_t i = 0; i < sn->n; i++)
    if (bm_journal_snapshot_emit(s, &sn->recs[i]) != 0) {
      sn->emit_errors++;
      return -1;
    }
  return sn->fail;
}

static void small_snapshot(struct snap *sn)
{
  sn->n = 0;
  sn->fail = 0;
  sn->emit_errors = 0;
  sn->recs[sn->n++] = make_rec(BM_JREC_SEQ, 1, true);
  for (unsigned i = 0; i < 3; i++)
    sn->recs[sn->n++] = make_rec(BM_JREC_STATE, i, i == 1);
  sn->recs[sn->n++] = make_rec(BM_JREC_COMMAND, 7, false);
  sn->recs[sn->n++] = make_rec(BM_JREC_RESPONSE, 7, false);
}

static void test_compaction(void)
{
  char path[PATH_MAX], tmp[PATH_MAX], err[256];
  static struct snap sn;
  static struct bm_jrec all[400];
  struct coll c = {0};
  bm_journal_t *j;
  uint64_t before, snap_size, want_size;
  size_t n = 0;

  in_dir(path, "compact");
  with_suffix(tmp, path, ".tmp");
  remove_journal(path);
  j = bm_journal_open(path, BM_JOURNAL_SYNC_ALWAYS, NULL, NULL, err,
                      sizeof(err));
  ok(j != NULL, "open (%s)", err);
  if (!j)
    return;
  bm_journal_set_limit(j, 4096);
  for (unsigned i = 0; i < 200; i++) {
    struct bm_jrec r = make_rec(all_types[i % N_TYPES], i, i % 3 == 0);
    if (bm_journal_append(j, &r) != 0)
      break;
  }
  before = bm_journal_size(j);
  ok(bm_journal_needs_compaction(j), "200 records outgrow a 4 KiB limit");

  small_snapshot(&sn);
  /* What the snapshot occupies: measured by writing it into a journal of
   * its own. */
  {
    char other[PATH_MAX];
    uint64_t off[300];
    size_t len;
    unsigned char *b;
    in_dir(other, "compact-measure");
    b = build(other, sn.recs, sn.n, off, &len);
    want_size = off[sn.n];
    free(b);
    remove_journal(other);
  }
  is_int(bm_journal_compact(j, snapshot, &sn), 0, "compaction succeeds");
  snap_size = bm_journal_size(j);
  is_int(snap_size, want_size, "the journal shrinks to exactly the snapshot");
  ok(snap_size < before, "... which is smaller (%" PRIu64 " < %" PRIu64 ")",
     snap_size, before);
  is_int(fsize(path), snap_size, "the file has that size");
  ok(!exists(tmp), "no .tmp file is left");
  ok(!bm_journal_needs_compaction(j), "right after compaction none is due");

  /* Records after compaction continue the sequence. */
  for (size_t i = 0; i < sn.n; i++)
    all[n++] = sn.recs[i];
  for (unsigned i = 0; i < 5; i++) {
    all[n] = make_rec(all_types[i], 500 + i, false);
    if (bm_journal_append(j, &all[n]) == 0)
      n++;
  }
  is_int(n, sn.n + 5, "appends after compaction succeed");
  is_int(bm_journal_sync(j), 0, "sync");
  is_int(bm_journal_close(j), 0, "close");
  j = reopen(path, &c, err, sizeof(err));
  ok(j && coll_matches(&c, all, n, 201),
     "reopen replays the snapshot then the later records, numbered on from "
     "201");
  jclose(j);

  /* A snapshot larger than the limit (and than the write buffer) does not
   * ask for compaction again until the journal is 4 times its size. */
  remove_journal(path);
  j = bm_journal_open(path, BM_JOURNAL_SYNC_NONE, NULL, NULL, err,
                      sizeof(err));
  if (!j)
    return;
  bm_journal_set_limit(j, 4096);
  sn.n = 0;
  for (unsigned i = 0; i < 250; i++)
    sn.recs[sn.n++] = make_rec(BM_JREC_STATE, i, true);
  is_int(bm_journal_compact(j, snapshot, &sn), 0,
         "a snapshot of 250 STATE records of maximum size compacts");
  snap_size = bm_journal_size(j);
  ok(snap_size > 64 * 1024 && snap_size > 4096,
     "it is larger than the limit and the write buffer (%" PRIu64 ")",
     snap_size);
  ok(!bm_journal_needs_compaction(j), "no compaction due right after");
  {
    struct bm_jrec r = make_rec(BM_JREC_COMMAND, 1, true);
    int appended = 0;
    while (bm_journal_size(j) <= 4 * snap_size && appended < 100000) {
      if (bm_journal_needs_compaction(j))
        break;
      if (bm_journal_append(j, &r) != 0)
        break;
      appended++;
    }
    ok(bm_journal_size(j) > 4 * snap_size && bm_journal_needs_compaction(j),
       "compaction is due once the journal passes 4 times the snapshot");
  }
  jclose(j);
  j = reopen(path, &c, err, sizeof(err));
  ok(j && c.n > 250 && rec_eq(&c.v[0], &sn.recs[0]) &&
         rec_eq(&c.v[249], &sn.recs[249]),
     "the large snapshot replays");
  jclose(j);

  /* An empty snapshot is a valid journal too. */
  j = reopen(path, &c, err, sizeof(err));
  sn.n = 0;
  ok(j && bm_journal_compact(j, snapshot, &sn) == 0 &&
         bm_journal_size(j) == HDR,
     "an empty snapshot leaves just a header");
  jclose(j);
  j = reopen(path, &c, err, sizeof(err));
  ok(j && c.n == 0, "which replays nothing");
  jclose(j);

  remove_journal(path);
  coll_release(&c);
}

/* Every step of compaction failing leaves the old journal as it was. */
static void test_compaction_failures(void)
{
  char path[PATH_MAX], tmp[PATH_MAX], err[256];
  static struct snap sn;
  struct bm_jrec recs[20], extra = make_rec(BM_JREC_TIMEOUT, 99, false);
  uint64_t off[21];
  struct coll c = {0};
  unsigned char *bytes;
  size_t len;

  in_dir(path, "compactfail");
  with_suffix(tmp, path, ".tmp");
  for (unsigned i = 0; i < 20; i++)
    recs[i] = make_rec(all_types[i % N_TYPES], i, true);

  enum { F_WRITE, F_WRITE_ZERO, F_FSYNC, F_RENAME, F_CALLBACK, F_INVALID };
  static const char *names[] = {"write fails (ENOSPC)", "write returns 0",
                                "fsync fails",          "rename fails",
                                "snapshot callback fails",
                                "snapshot emits an invalid record"};
  for (int f = F_WRITE; f <= F_INVALID; f++) {
    bm_journal_t *j;
    int rc, saved;

    bytes = build(path, recs, 19, off, &len);
    if (!bytes)
      return;
    j = bm_journal_open(path, BM_JOURNAL_SYNC_ALWAYS, NULL, NULL, err,
                        sizeof(err));
    if (!j) {
      free(bytes);
      return;
    }
    bm_journal_set_io(j, &test_io);
    small_snapshot(&sn);
    io_reset();
    switch (f) {
    case F_WRITE:
      io.fail_pwrite_at = 1;
      io.pwrite_errno = ENOSPC;
      break;
    case F_WRITE_ZERO:
      io.fail_pwrite_at = 1;
      io.pwrite_zero = true;
      break;
    case F_FSYNC:
      io.fail_fsync_at = 1;
      break;
    case F_RENAME:
      io.fail_rename_at = 1;
      break;
    case F_CALLBACK:
      sn.fail = -1;
      break;
    case F_INVALID:
      sn.recs[2].u.state.confirmed = 5;
      break;
    }
    log_reset();
    errno = 0;
    rc = bm_journal_compact(j, snapshot, &sn);
    saved = errno;
    ok(rc == -1 && saved != 0, "%s: compaction fails (%s)", names[f],
       strerror(saved));
    ok(f != F_WRITE || saved == ENOSPC, "%s: errno is kept", names[f]);
    ok(log_lines == 1 && contains(log_last, "old journal stays"),
       "%s: one line says the old journal stays (%s)", names[f], log_last);
    ok(same_bytes(path, bytes, len) && bm_journal_size(j) == len,
       "%s: the old journal is intact", names[f]);
    ok(!exists(tmp), "%s: the .tmp file is removed", names[f]);
    io_reset();
    ok(bm_journal_append(j, &recs[19]) == 0 && bm_journal_sync(j) == 0 &&
           bm_journal_close(j) == 0,
       "%s: the old journal goes on appending", names[f]);
    j = reopen(path, &c, err, sizeof(err));
    ok(j && coll_matches(&c, recs, 20, 1),
       "%s: and replays every record", names[f]);
    jclose(j);
    free(bytes);
  }

  /* The directory fsync fails after the rename: the new journal is in
   * place, the error is reported, and the next sync retries it. */
  {
    bm_journal_t *j;
    int rc, syncs;

    bytes = build(path, recs, 19, off, &len);
    free(bytes);
    j = bm_journal_open(path, BM_JOURNAL_SYNC_ALWAYS, NULL, NULL, err,
                        sizeof(err));
    if (!j)
      return;
    bm_journal_set_io(j, &test_io);
    small_snapshot(&sn);
    io_reset();
    io.fail_fsync_at = 2; /* 1: the .tmp file, 2: the directory */
    log_reset();
    rc = bm_journal_compact(j, snapshot, &sn);
    ok(rc == -1 && io.rename_calls == 1,
       "directory fsync fails: compaction reports it after the rename");
    ok(contains(log_last, "new journal is in place"),
       "directory fsync fails: the log line says so (%s)", log_last);
    ok(!exists(tmp), "directory fsync fails: the new journal is no longer "
                     ".tmp");
    syncs = io.fsync_calls;
    ok(bm_journal_sync(j) == 0 && io.fsync_calls == syncs + 1,
       "the next sync fsyncs the directory (and only that)");
    ok(bm_journal_sync(j) == 0 && io.fsync_calls == syncs + 1,
       "once");
    ok(bm_journal_append(j, &extra) == 0 && bm_journal_close(j) == 0,
       "the new journal appends");
    j = reopen(path, &c, err, sizeof(err));
    ok(j && c.n == sn.n + 1 && rec_eq(&c.v[0], &sn.recs[0]) &&
           rec_eq(&c.v[sn.n], &extra) && c.seq[0] == 20,
       "and replays the snapshot and the later record, numbered from 20");
    jclose(j);
  }
  remove_journal(path);
  coll_release(&c);
}

static void test_append_failures(void)
{
  char path[PATH_MAX], err[256];
  struct bm_jrec recs[40];
  struct coll c = {0};
  size_t n = 0;
  bm_journal_t *j;
  uint64_t size;
  int rc, saved;

  in_dir(path, "appendfail");
  remove_journal(path);
  for (unsigned i = 0; i < 40; i++)
    recs[i] = make_rec(all_types[i % N_TYPES], i, i % 2 == 1);
  j = bm_journal_open(path, BM_JOURNAL_SYNC_ALWAYS, NULL, NULL, err,
                      sizeof(err));
  ok(j != NULL, "open (%s)", err);
  if (!j)
    return;
  bm_journal_set_io(j, &test_io);
  for (int i = 0; i < 3; i++)
    if (bm_journal_append(j, &recs[n]) == 0)
      n++;

  struct {
    const char *what;
    int fail_at, err;
    size_t short_max;
    bool zero;
  } cases[] = {
      {"ENOSPC", 1, ENOSPC, 0, false},
      {"EIO", 1, EIO, 0, false},
      {"a short write, then ENOSPC", 2, ENOSPC, 5, false},
      {"short writes, then EIO", 4, EIO, 7, false},
      {"a write of 0 bytes", 1, 0, 0, true},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct bm_jrec r = make_rec(BM_JREC_STATE, 3, true); /* ~1 KiB */
    size = bm_journal_size(j);
    io_reset();
    io.fail_pwrite_at = cases[i].fail_at;
    io.pwrite_errno = cases[i].err;
    io.short_max = cases[i].short_max;
    io.pwrite_zero = cases[i].zero;
    errno = 0;
    rc = bm_journal_append(j, &r);
    saved = errno;
    ok(rc == -1 && saved == (cases[i].zero ? EIO : cases[i].err),
       "%s: append fails with errno kept (%s)", cases[i].what,
       strerror(saved));
    ok(bm_journal_size(j) == size && fsize(path) == (long long)size,
       "%s: the file is cut back to %" PRIu64 " bytes", cases[i].what, size);
    io_reset();
    coll_reset(&c);
    ok(bm_journal_read(path, collect, &c, NULL, err, sizeof(err)) == 0 &&
           coll_matches(&c, recs, n, 1),
       "%s: the file replays the %zu records appended before",
       cases[i].what, n);
    ok(bm_journal_append(j, &recs[n]) == 0, "%s: the next append succeeds",
       cases[i].what);
    n++;
  }

  /* EINTR and short writes that end well are not failures. */
  io_reset();
  io.eintr_every = 2;
  io.short_max = 3;
  rc = 0;
  for (int i = 0; i < 5; i++)
    rc |= bm_journal_append(j, &recs[n++]);
  ok(rc == 0 && io.pwrite_calls > 100,
     "appends survive EINTR and 3-byte writes (%d calls)", io.pwrite_calls);
  io_reset();

  /* The cut after a failed write fails too: the journal refuses appends
   * until a compaction rewrites it. */
  {
    struct bm_jrec r = make_rec(BM_JREC_COMMAND, 1, true);
    static struct snap sn;
    io.fail_pwrite_at = 2;
    io.pwrite_errno = ENOSPC;
    io.short_max = 10;
    io.fail_ftruncate_at = 1;
    log_reset();
    ok(bm_journal_append(j, &r) == -1 && errno == ENOSPC,
       "write and cut fail: append fails with the write's errno");
    ok(log_lines == 1 && log_level == BM_LOG_ERR &&
           contains(log_last, "refusing appends"),
       "write and cut fail: logged (%s)", log_last);
    io_reset();
    ok(bm_journal_append(j, &r) == -1 && errno == EIO,
       "the failed journal refuses appends with EIO");
    ok(bm_journal_sync(j) == -1 && errno == EIO,
       "the failed journal refuses syncs with EIO");
    /* The snapshot is what the caller still knows: the records so far,
     * renumbered from the journal's next sequence number (n + 1). */
    uint64_t first = n + 1;
    sn.n = 0;
    for (size_t i = 0; i < n; i++)
      sn.recs[sn.n++] = recs[i];
    ok(bm_journal_compact(j, snapshot, &sn) == 0,
       "compaction rewrites the failed journal");
    ok(bm_journal_append(j, &recs[n]) == 0 && bm_journal_sync(j) == 0,
       "after it appends and syncs work again");
    n++;
    ok(bm_journal_close(j) == 0, "close");
    log_reset();
    j = reopen(path, &c, err, sizeof(err));
    ok(j && coll_matches(&c, recs, n, first) && log_lines == 0,
       "reopen replays every record, the half one is gone, nothing to "
       "repair");
    jclose(j);
  }
  remove_journal(path);
  coll_release(&c);
}

/* Opens path with the fault-injection hooks, counters reset; one test
 * point for the open. */
static bm_journal_t *open_hooked(const char *path,
                                 enum bm_journal_sync_mode mode)
{
  char err[256];
  bm_journal_t *j = bm_journal_open(path, mode, NULL, NULL, err, sizeof(err));

  ok(j != NULL, "open (%s)", err);
  if (j) {
    bm_journal_set_io(j, &test_io);
    io_reset();
  }
  return j;
}

static void test_sync(void)
{
  char path[PATH_MAX], err[256];
  struct bm_jrec r = make_rec(BM_JREC_COMMAND, 1, false);
  bm_journal_t *j;
  int bad = 0;

  in_dir(path, "sync");
  remove_journal(path);
  if (!(j = open_hooked(path, BM_JOURNAL_SYNC_ALWAYS)))
    return;
  is_int(bm_journal_sync(j), 0, "sync with nothing appended");
  is_int(io.fsync_calls, 0, "... calls no fsync");
  for (int i = 0; i < 10; i++)
    bad += bm_journal_append(j, &r) != 0;
  is_int(io.fsync_calls, 0, "10 appends call no fsync");
  is_int(bm_journal_sync(j), 0, "one sync");
  is_int(io.fsync_calls, 1, "10 appends + 1 sync: exactly 1 fsync (group "
                            "commit)");
  is_int(bm_journal_sync(j), 0, "a second sync");
  is_int(io.fsync_calls, 1, "... has nothing to do");
  bad += bm_journal_append(j, &r) != 0;
  io_reset();
  is_int(bm_journal_close(j), 0, "close with an unsynced append");
  is_int(io.fsync_calls, 1, "... fsyncs it");

  if (!(j = open_hooked(path, BM_JOURNAL_SYNC_NONE)))
    return;
  for (int i = 0; i < 10; i++)
    bad += bm_journal_append(j, &r) != 0;
  is_int(bm_journal_sync(j), 0, "mode none: sync succeeds");
  is_int(bm_journal_close(j), 0, "mode none: close");
  is_int(io.fsync_calls, 0, "mode none: never an fsync");

  if (!(j = open_hooked(path, BM_JOURNAL_SYNC_FULL)))
    return;
  bad += bm_journal_append(j, &r) != 0;
  is_int(bm_journal_sync(j), 0, "mode full: sync succeeds");
  is_int(io.fsync_calls, 1, "mode full: the sync fsyncs");
  bad += bm_journal_append(j, &r) != 0;
  is_int(bm_journal_close(j), 0, "mode full: close");
  is_int(io.fsync_calls, 2, "mode full: so does the close, after an append");

  /* A failed fsync: unknown what reached the disk, so the journal stops. */
  if (!(j = open_hooked(path, BM_JOURNAL_SYNC_ALWAYS)))
    return;
  io.fail_fsync_at = 1;
  io.fsync_errno = EIO;
  bad += bm_journal_append(j, &r) != 0;
  log_reset();
  ok(bm_journal_sync(j) == -1 && errno == EIO, "a failed fsync fails sync");
  ok(log_lines == 1 && contains(log_last, "cannot fsync"),
     "... logged once (%s)", log_last);
  ok(bm_journal_sync(j) == -1 && io.fsync_calls == 1,
     "... and is not retried as if it could succeed");
  ok(bm_journal_append(j, &r) == -1 && errno == EIO,
     "... and the journal refuses appends");
  ok(bm_journal_close(j) == -1, "close reports the failed journal");
  is_int(bad, 0, "every append that should succeed did");
  remove_journal(path);
}

/* Reads path back: does it hold exactly want[0..n), numbered from 1? */
static bool holds_exactly(const char *path, const struct bm_jrec *want,
                          size_t n)
{
  struct coll c = {0};
  char err[256];
  bool same = bm_journal_read(path, collect, &c, NULL, err, sizeof(err)) == 0 &&
              coll_matches(&c, want, n, 1);

  coll_release(&c);
  return same;
}

/* path holding recs[0..n) (build), opened again with the fault hooks
 * (open_hooked: NULL, a failed test point, when it cannot be). */
static bm_journal_t *open_holding(const char *path,
                                  enum bm_journal_sync_mode mode,
                                  const struct bm_jrec *recs, size_t n)
{
  uint64_t off[8];
  size_t len;

  if (n >= sizeof(off) / sizeof(off[0])) {
    fprintf(stderr, "open_holding: at most 7 records\n");
    exit(99);
  }
  free(build(path, recs, n, off, &len));
  return open_hooked(path, mode);
}

/* A turn's records taken back: after a failed fsync (still in the file),
 * while buffered, after a long turn's early flush, and when the cut
 * itself fails. */
static void test_cut(void)
{
  char path[PATH_MAX];
  static struct bm_jrec before[3], turn[120];
  struct bm_journal_mark m;
  bm_journal_t *j;
  int bad = 0;

  for (unsigned i = 0; i < 3; i++)
    before[i] = make_rec(BM_JREC_CONFIRM, i, false);
  for (unsigned i = 0; i < 120; i++)
    turn[i] = make_rec(BM_JREC_COMMAND, 10 + i, true);

  /* The failed fsync of a turn with commands: cut off, the journal failed
   * still, and a reader (a restart) finds the records before it alone. */
  in_dir(path, "cut");
  if (!(j = open_holding(path, BM_JOURNAL_SYNC_ALWAYS, before, 3)))
    return;
  bm_journal_mark(j, &m);
  bad += bm_journal_append_buffered(j, &turn[0]) != 0;
  bad += bm_journal_append_buffered(j, &turn[1]) != 0;
  io.fail_fsync_at = io.fsync_calls + 1;
  ok(bm_journal_sync(j) == -1 && bm_journal_is_failed(j),
     "a turn's fsync fails: the journal is failed");
  ok(holds_exactly(path, before, 3) == false,
     "... and the turn's two records are in the file");
  is_int(bm_journal_cut(j, &m), 0, "the turn is cut off");
  ok(bm_journal_is_failed(j), "... the journal still failed");
  ok(bm_journal_size(j) == m.size, "... its size the mark's");
  ok(holds_exactly(path, before, 3), "... the file holds the 3 records "
                                     "before the turn alone");
  (void)bm_journal_close(j); /* -1: failed */

  /* Cut while buffered: no ftruncate, the numbers given again. */
  if (!(j = open_holding(path, BM_JOURNAL_SYNC_NONE, before, 2)))
    return;
  bm_journal_mark(j, &m);
  bad += bm_journal_append_buffered(j, &turn[0]) != 0;
  bad += bm_journal_append_buffered(j, &turn[1]) != 0;
  is_int(bm_journal_cut(j, &m), 0, "a buffered turn is cut");
  is_int(io.ftruncate_calls, 0, "... without touching the file");
  bad += bm_journal_append_buffered(j, &before[2]) != 0;
  bad += bm_journal_flush(j) != 0;
  ok(holds_exactly(path, before, 3), "... and the next record takes the "
                                     "first cut one's number");
  jclose(j);

  /* A long turn: its first 32 KiB written by an early flush, a later
   * flush failing (ENOSPC). The cut takes back the written part too. */
  if (!(j = open_holding(path, BM_JOURNAL_SYNC_NONE, before, 3)))
    return;
  bm_journal_mark(j, &m);
  io.pwrite_errno = ENOSPC;
  {
    int early = 0, failed = 0;
    for (int i = 0; i < 120; i++) { /* well over 32 KiB */
      int w = io.pwrite_calls;
      if (bm_journal_append_buffered(j, &turn[i]) != 0)
        failed++;
      if (io.pwrite_calls > w && !io.fail_pwrite_at) {
        early++;
        io.fail_pwrite_at = io.pwrite_calls + 1; /* the next write fails */
      }
    }
    if (bm_journal_flush(j) != 0)
      failed++;
    ok(early == 1 && failed == 1,
       "a long turn: one early flush written, a later write failing "
       "(%d early, %d failed)", early, failed);
  }
  ok(!holds_exactly(path, before, 3), "... the early flush's records are "
                                      "in the file");
  io.fail_pwrite_at = 0;
  is_int(bm_journal_cut(j, &m), 0, "the whole turn is cut");
  ok(holds_exactly(path, before, 3), "... the file holds the records "
                                     "before it alone");
  ok(!bm_journal_is_failed(j), "... and the journal goes on");
  bad += bm_journal_append(j, &turn[0]) != 0;
  {
    struct bm_jrec want[4] = {before[0], before[1], before[2], turn[0]};
    ok(holds_exactly(path, want, 4), "... numbering on from the cut");
  }
  jclose(j);

  /* A write that fails half-way, and whose own cut fails: the journal is
   * failed with part of a record past its known end. The turn's cut
   * removes it all the same. */
  if (!(j = open_holding(path, BM_JOURNAL_SYNC_NONE, before, 1)))
    return;
  bm_journal_mark(j, &m);
  bad += bm_journal_append_buffered(j, &turn[0]) != 0;
  io.short_max = 16;                         /* 16 bytes reach the file, */
  io.fail_pwrite_at = io.pwrite_calls + 2;   /* then the write fails, */
  io.pwrite_errno = EIO;
  io.fail_ftruncate_at = io.ftruncate_calls + 1; /* and so does its cut */
  ok(bm_journal_flush(j) == -1 && bm_journal_is_failed(j),
     "a flush failing half-way with its cut: the journal is failed");
  ok(fsize(path) == (long long)m.size + 16,
     "... 16 bytes of a record past the mark");
  io.short_max = 0;
  io.fail_pwrite_at = 0;
  is_int(bm_journal_cut(j, &m), 0, "the turn is cut");
  ok(fsize(path) == (long long)m.size, "... the file ends at the mark again");
  (void)bm_journal_close(j);

  /* The cut fails: the journal is failed, and says so. */
  if (!(j = open_holding(path, BM_JOURNAL_SYNC_NONE, before, 1)))
    return;
  bm_journal_mark(j, &m);
  bad += bm_journal_append(j, &turn[0]) != 0;
  io.fail_ftruncate_at = io.ftruncate_calls + 1;
  log_reset();
  ok(bm_journal_cut(j, &m) == -1 && errno == EIO, "a cut that fails is -1");
  ok(bm_journal_is_failed(j), "... the journal failed");
  ok(log_lines == 1 && contains(log_last, "cannot cut records off journal"),
     "... logged (%s)", log_last);
  (void)bm_journal_close(j);
  is_int(bad, 0, "every append that should succeed did");
  remove_journal(path);
}

/* --- a compaction by another process, between open and lock ----------- */

/* journal.c's flock resolves to this one: while race_left > 0, each call
 * first puts a fresh copy of race_from (or of race_path itself when
 * race_from is "") over race_path, as another process's compaction
 * renames its new file over the journal after this one opened it. */
static char race_path[PATH_MAX], race_from[PATH_MAX];
static int race_left, race_done;

int flock(int fd, int op)
{
  if (race_left > 0 && (op & LOCK_EX)) {
    char tmp[PATH_MAX + 8];
    race_left--;
    snprintf(tmp, sizeof(tmp), "%s.race", race_path);
    size_t len;
    unsigned char *bytes = slurp(race_from[0] ? race_from : race_path, &len);
    if (bytes) {
      spit(tmp, bytes, len);
      free(bytes);
      if (rename(tmp, race_path) == 0)
        race_done++;
    }
  }
  return (int)syscall(SYS_flock, fd, op);
}

/* Opening while another process compacts: the file opened is replaced
 * before it is locked; the journal is the new file, never the old one. */
static void test_open_race(void)
{
  char path[PATH_MAX], other[PATH_MAX], err[256];
  static struct bm_jrec old_recs[2], new_recs[4];
  struct coll c = {0};
  bm_journal_t *j;
  uint64_t off[4];
  size_t len;
  int bad = 0;

  for (unsigned i = 0; i < 2; i++)
    old_recs[i] = make_rec(BM_JREC_CONFIRM, 100 + i, false);
  for (unsigned i = 0; i < 4; i++)
    new_recs[i] = make_rec(BM_JREC_COMMAND, 200 + i, false);
  in_dir(path, "race");
  in_dir(other, "race-new");
  /* The journal as this process finds it, and the compacted one that
   * replaces it (three records, a fourth appended below). */
  free(build(path, old_recs, 2, off, &len));
  free(build(other, new_recs, 3, off, &len));

  snprintf(race_path, sizeof(race_path), "%s", path);
  snprintf(race_from, sizeof(race_from), "%s", other);
  race_left = 1;
  race_done = 0;
  j = bm_journal_open(path, BM_JOURNAL_SYNC_NONE, collect, &c, err,
                      sizeof(err));
  is_int(race_done, 1, "the file was replaced between open and lock");
  ok(j != NULL, "the open succeeds (%s)", err);
  ok(coll_matches(&c, new_recs, 3, 1),
     "... and replays the new file, not the one it opened first (%zu "
     "records)", c.n);
  if (j) {
    bad += bm_journal_append(j, &new_recs[3]) != 0;
    jclose(j);
  }
  ok(holds_exactly(path, new_recs, 4), "... and appends to it");
  coll_reset(&c);

  /* Replaced at every open: given up after 4, with a clear error. */
  race_from[0] = '\0';
  race_left = 100;
  race_done = 0;
  j = bm_journal_open(path, BM_JOURNAL_SYNC_NONE, collect, &c, err,
                      sizeof(err));
  ok(j == NULL && contains(err, "was replaced by another process each time"),
     "a file replaced at every open: the open fails (%s)", err);
  is_int(race_done, 4, "... after 4 tries");
  race_left = 0;
  if (j)
    jclose(j);
  coll_release(&c);
  is_int(bad, 0, "every append that should succeed did");
  remove_journal(path);
  remove_journal(other);
}

/* After a failed flush: buffers and flushes recs[*n] (fault injection
 * off), and tells whether the file replays recs[0..*n] numbered from 1,
 * the lost records' numbers given again. */
static bool next_renumbered(bm_journal_t *j, const char *path,
                            struct coll *c, const struct bm_jrec *recs,
                            size_t *n)
{
  char err[256];

  io_reset();
  if (bm_journal_append_buffered(j, &recs[(*n)++]) != 0 ||
      bm_journal_flush(j) != 0)
    return false;
  coll_reset(c);
  return bm_journal_read(path, collect, c, NULL, err, sizeof(err)) == 0 &&
         coll_matches(c, recs, *n, 1);
}

/* Buffered appends: a turn's records in one write, in order with the
 * unbuffered ones, and a failed write loses none silently. */
static void test_buffered(void)
{
  char path[PATH_MAX], err[256];
  static struct bm_jrec recs[120];
  static struct snap sn;
  struct coll c = {0};
  size_t n = 0;
  uint64_t size;
  bm_journal_t *j;
  int bad = 0, rc, saved;

  in_dir(path, "buffered");
  remove_journal(path);
  for (unsigned i = 0; i < 120; i++) /* from 20 on, ~1 KiB each */
    recs[i] = i < 20 ? make_rec(all_types[i % N_TYPES], i, i % 3 == 0)
                     : make_rec(BM_JREC_STATE, i, true);
  if (!(j = open_hooked(path, BM_JOURNAL_SYNC_ALWAYS)))
    return;
  size = bm_journal_size(j);
  for (int i = 0; i < 3; i++)
    bad += bm_journal_append_buffered(j, &recs[n++]) != 0;
  ok(io.pwrite_calls == 0 && fsize(path) == (long long)size &&
         bm_journal_size(j) > size,
     "3 buffered records: nothing written yet, the size counts them");
  ok(bm_journal_flush(j) == 0 && io.pwrite_calls == 1 &&
         fsize(path) == (long long)bm_journal_size(j),
     "flush writes them with one write");
  ok(bm_journal_flush(j) == 0 && io.pwrite_calls == 1,
     "a flush with nothing buffered writes nothing");
  coll_reset(&c);
  ok(bm_journal_read(path, collect, &c, NULL, err, sizeof(err)) == 0 &&
         coll_matches(&c, recs, n, 1),
     "they replay in order, numbered 1..3 (%s)", err);

  /* An unbuffered append, a sync and a close each write the buffer first. */
  bad += bm_journal_append_buffered(j, &recs[n++]) != 0;
  bad += bm_journal_append(j, &recs[n++]) != 0;
  bad += bm_journal_append_buffered(j, &recs[n++]) != 0;
  io_reset();
  ok(bm_journal_sync(j) == 0 && io.pwrite_calls == 1 && io.fsync_calls == 1,
     "sync writes the buffer, then fsyncs");
  coll_reset(&c);
  ok(bm_journal_read(path, collect, &c, NULL, err, sizeof(err)) == 0 &&
         coll_matches(&c, recs, n, 1),
     "buffered, unbuffered, buffered: replayed in the order appended");

  /* A failed write: cut off, none of them in the file, their sequence
   * numbers given again. */
  struct {
    const char *what;
    int fail_at, err;
    size_t short_max;
  } cases[] = {
      {"ENOSPC", 1, ENOSPC, 0},
      {"a short write, then EIO", 2, EIO, 40},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct bm_jrec lost = make_rec(BM_JREC_STATE, 7, true);
    size = fsize(path);
    for (int k = 0; k < 3; k++)
      bad += bm_journal_append_buffered(j, &lost) != 0;
    io_reset();
    io.fail_pwrite_at = cases[i].fail_at;
    io.pwrite_errno = cases[i].err;
    io.short_max = cases[i].short_max;
    errno = 0;
    rc = bm_journal_flush(j);
    saved = errno;
    ok(rc == -1 && saved == cases[i].err, "%s: flush fails (%s)",
       cases[i].what, strerror(saved));
    ok(fsize(path) == (long long)size && bm_journal_size(j) == (uint64_t)size,
       "%s: the file is cut back to %lld bytes", cases[i].what,
       (long long)size);
    ok(next_renumbered(j, path, &c, recs, &n),
       "%s: the next record takes the first lost one's number", cases[i].what);
  }

  /* A full buffer is written before it overflows; when that write fails,
   * the append that needed the room fails too, and nothing is numbered
   * twice. */
  {
    struct bm_jrec big = make_rec(BM_JREC_STATE, 9, true);
    size_t k = 0;
    size = fsize(path);
    io_reset();
    while (io.pwrite_calls == 0 && k < 100) { /* fill to the brim */
      io.fail_pwrite_at = 1;
      io.pwrite_errno = ENOSPC;
      rc = bm_journal_append_buffered(j, &big);
      k++;
    }
    saved = errno;
    ok(rc == -1 && saved == ENOSPC && k > 1,
       "the append that needed room fails with the write's errno (%zu "
       "appends, %s)",
       k, strerror(saved));
    ok(fsize(path) == (long long)size &&
           bm_journal_size(j) == (uint64_t)size,
       "... and the buffered records are cut off with it");
    ok(next_renumbered(j, path, &c, recs, &n),
       "... and the next record takes the first lost one's number");
  }
  /* Each record's size is what it adds to bm_journal_size; a write is due
   * whenever the next one would take the buffer past 32 KiB. */
  {
    uint64_t fill = 0, grew;
    int writes = 0, wrong = 0;
    io_reset();
    while (n < 120) {
      size = bm_journal_size(j);
      bad += bm_journal_append_buffered(j, &recs[n++]) != 0;
      grew = bm_journal_size(j) - size;
      if (fill + grew > 32 * 1024) {
        wrong += writes >= 16 || io.sizes[writes] != fill;
        writes++;
        fill = 0;
      }
      fill += grew;
    }
    ok(writes > 1 && io.pwrite_calls == writes && wrong == 0,
       "a full buffer is written just before it would overflow (%d writes, "
       "%d expected, %d of another size)",
       io.pwrite_calls, writes, wrong);
  }
  bad += bm_journal_append_buffered(j, &recs[0]) != 0;
  ok(bm_journal_close(j) == 0, "close with records buffered");
  j = reopen(path, &c, err, sizeof(err));
  ok(j != NULL && c.n == n + 1 && coll_prefix(&c, recs, n) &&
         rec_eq(&c.v[n], &recs[0]),
     "close wrote them: all %zu replay in order (%s)", n + 1, err);
  if (!j)
    return;
  n++;

  /* The write and its cut fail: the journal is failed, and refuses. */
  bm_journal_set_io(j, &test_io);
  io_reset();
  bad += bm_journal_append_buffered(j, &recs[1]) != 0;
  io.fail_pwrite_at = 1;
  io.pwrite_errno = EIO;
  io.fail_ftruncate_at = 1;
  log_reset();
  ok(bm_journal_flush(j) == -1 && errno == EIO && log_lines == 1 &&
         contains(log_last, "refusing appends"),
     "write and cut fail: flush fails, logged (%s)", log_last);
  ok(bm_journal_is_failed(j), "... and the journal is failed");
  io_reset();
  ok(bm_journal_append_buffered(j, &recs[1]) == -1 && errno == EIO,
     "the failed journal refuses buffered appends with EIO");

  /* Compaction with records buffered: the snapshot stands for them. */
  sn.n = 0;
  for (size_t i = 0; i < 5; i++)
    sn.recs[sn.n++] = recs[i];
  ok(bm_journal_compact(j, snapshot, &sn) == 0, "compaction rewrites it");
  bad += bm_journal_append_buffered(j, &recs[5]) != 0;
  bad += bm_journal_append_buffered(j, &recs[6]) != 0;
  sn.recs[sn.n++] = recs[5];
  sn.recs[sn.n++] = recs[6];
  ok(bm_journal_compact(j, snapshot, &sn) == 0,
     "a compaction with 2 records buffered");
  ok(bm_journal_size(j) == (uint64_t)fsize(path) && !bm_journal_is_failed(j),
     "after it the file is all there is (%lld bytes), nothing is buffered",
     fsize(path));
  bad += bm_journal_append(j, &recs[7]) != 0;
  sn.recs[sn.n++] = recs[7];
  jclose(j);
  j = reopen(path, &c, err, sizeof(err));
  ok(j != NULL && c.n == sn.n && coll_prefix(&c, sn.recs, sn.n),
     "it holds the snapshot, each record once (%zu of %zu)", c.n, sn.n);
  if (j)
    jclose(j);
  is_int(bad, 0, "every buffered append and flush that should succeed did");
  remove_journal(path);
  coll_release(&c);
}

static void test_reader(void)
{
  char path[PATH_MAX], err[256];
  struct bm_jrec recs[BASE_N];
  uint64_t off[BASE_N + 1];
  struct bm_journal_info info;
  struct coll c = {0};
  struct stat before, after;
  unsigned char *bytes;
  size_t len;
  bm_journal_t *j;

  in_dir(path, "reader");
  base_records(recs);
  bytes = build(path, recs, BASE_N, off, &len);
  if (!bytes)
    return;

  /* While the plugin holds the journal open and appends. */
  j = bm_journal_open(path, BM_JOURNAL_SYNC_NONE, NULL, NULL, err,
                      sizeof(err));
  ok(j != NULL, "writer opens (%s)", err);
  ok(bm_journal_read(path, collect, &c, &info, err, sizeof(err)) == 0 &&
         coll_matches(&c, recs, BASE_N, 1) && info.records == BASE_N &&
         info.valid_end == len && info.file_size == len &&
         info.first_seq == 1 && !strcmp(info.stop, "end of file"),
     "the reader reads a journal the writer holds open (%s)", err);

  /* A second writer is refused. */
  {
    bm_journal_t *j2 = bm_journal_open(path, BM_JOURNAL_SYNC_NONE, NULL,
                                       NULL, err, sizeof(err));
    ok(j2 == NULL && contains(err, "in use"),
       "a second open of the same journal fails (%s)", err);
    jclose(j2);
  }
  jclose(j);

  /* A record being written (here: half of it) ends the reading, and the
   * reader changes nothing: not the bytes, the size, the inode, the mtime. */
  {
    unsigned char *half = malloc(len + 100);
    struct bm_jrec r = make_rec(BM_JREC_COMMAND, 5, true);
    uint64_t off2[2];
    size_t len2;
    unsigned char *one;
    char other[PATH_MAX];
    in_dir(other, "reader-one");
    one = build(other, &r, 1, off2, &len2);
    remove_journal(other);
    if (half && one) {
      memcpy(half, bytes, len);
      memcpy(half + len, one + HDR, 60);
      spit(path, half, len + 60);
      ok(stat(path, &before) == 0, "stat");
      coll_reset(&c);
      ok(bm_journal_read(path, collect, &c, &info, err, sizeof(err)) == 0 &&
             coll_matches(&c, recs, BASE_N, 1) && info.valid_end == len &&
             !strcmp(info.stop, "torn record"),
         "a half-written record ends the reading (%s)", info.stop);
      ok(stat(path, &after) == 0 && after.st_ino == before.st_ino &&
             after.st_size == before.st_size &&
             after.st_mtim.tv_sec == before.st_mtim.tv_sec &&
             after.st_mtim.tv_nsec == before.st_mtim.tv_nsec &&
             same_bytes(path, half, len + 60),
         "the reader left the file as it was");
      /* Mid-file corruption: the reader stops and still changes nothing. */
      half[off[3] + 15] ^= 1;
      spit(path, half, len + 60);
      coll_reset(&c);
      ok(bm_journal_read(path, collect, &c, &info, err, sizeof(err)) == 0 &&
             coll_matches(&c, recs, 3, 1) &&
             !strcmp(info.stop, "bad checksum") &&
             same_bytes(path, half, len + 60),
         "mid-file corruption: the reader stops there and copies nothing");
      char corrupt[PATH_MAX];
      with_suffix(corrupt, path, ".corrupt");
      ok(!exists(corrupt), "... no .corrupt file");
    }
    free(half);
    free(one);
  }

  /* The callback can stop the reading: that is an error. */
  spit(path, bytes, len);
  coll_reset(&c);
  c.fail_at = 5;
  ok(bm_journal_read(path, collect, &c, &info, err, sizeof(err)) == -1 &&
         c.n == 4 && info.records == 4 && contains(err, "callback"),
     "a callback returning nonzero stops the reading with -1 (%s)", err);
  in_dir(err, "no-such-journal");
  ok(bm_journal_read(err, NULL, NULL, &info, NULL, 0) == -1,
     "reading a missing journal fails");

  /* The same for replay in open: the open fails, the file is untouched. */
  {
    unsigned char *torn = malloc(len + 7);
    if (torn) {
      memcpy(torn, bytes, len);
      memset(torn + len, 0xAB, 7);
      spit(path, torn, len + 7);
      coll_reset(&c);
      c.fail_at = 3;
      j = bm_journal_open(path, BM_JOURNAL_SYNC_NONE, collect, &c, err,
                          sizeof(err));
      ok(j == NULL && contains(err, "record 3") &&
             same_bytes(path, torn, len + 7),
         "a replay callback failing fails the open, the torn tail stays "
         "(%s)",
         err);
      jclose(j);
    }
    free(torn);
  }
  remove_journal(path);
  free(bytes);
  coll_release(&c);
}

static void test_bad_paths(void)
{
  char path[PATH_MAX], err[256];
  bm_journal_t *j;
  static char longpath[PATH_MAX + 10];

  j = bm_journal_open("", BM_JOURNAL_SYNC_NONE, NULL, NULL, err, sizeof(err));
  ok(j == NULL && contains(err, "empty"), "an empty path fails (%s)", err);
  memset(longpath, 'a', sizeof(longpath) - 1);
  j = bm_journal_open(longpath, BM_JOURNAL_SYNC_NONE, NULL, NULL, err,
                      sizeof(err));
  ok(j == NULL && contains(err, "too long"), "an overlong path fails (%s)",
     err);
  in_dir(path, "file-not-dir");
  spit(path, "x", 1);
  in_dir(path, "file-not-dir/j");
  j = bm_journal_open(path, BM_JOURNAL_SYNC_NONE, NULL, NULL, err,
                      sizeof(err));
  ok(j == NULL, "a path below a regular file fails (%s)", err);
  /* A directory where the journal should be. */
  in_dir(path, "a-directory");
  ok(mkdir(path, 0700) == 0, "mkdir");
  j = bm_journal_open(path, BM_JOURNAL_SYNC_NONE, NULL, NULL, err,
                      sizeof(err));
  ok(j == NULL, "a directory as the journal fails (%s)", err);
  /* A small err buffer is filled, bounded. */
  j = bm_journal_open("", BM_JOURNAL_SYNC_NONE, NULL, NULL, err, 4);
  ok(j == NULL && strlen(err) == 3, "err is bounded by errlen");
  /* A stale .tmp of a crashed compaction is removed on open. */
  {
    char tmp[PATH_MAX];
    in_dir(path, "stale");
    with_suffix(tmp, path, ".tmp");
    spit(tmp, "half a snapshot", 15);
    j = bm_journal_open(path, BM_JOURNAL_SYNC_NONE, NULL, NULL, err,
                        sizeof(err));
    ok(j && !exists(tmp), "a stale .tmp is removed on open");
    jclose(j);
    remove_journal(path);
  }
}

/* Random records, random damage, replay compared with what went in.  Most
 * journals are small; the last rounds hold 1500 records (several times the
 * reader's 64 KiB window), so records, damage and the search for valid
 * records after it straddle window boundaries. */
#define RANDOM_ROUNDS 300
#define RANDOM_BIG_ROUNDS 12
#define RANDOM_BIG_N 1500
static void test_random(void)
{
  char path[PATH_MAX], corrupt[PATH_MAX], err[256];
  static struct bm_jrec recs[RANDOM_BIG_N];
  static uint64_t off[RANDOM_BIG_N + 1];
  struct coll c = {0};
  int rounds = 0, bad_replay = 0, bad_size = 0, bad_copy = 0, bad_open = 0;
  int bad_read = 0, bad_log = 0;
  int kinds[6] = {0};

  in_dir(path, "random");
  with_suffix(corrupt, path, ".corrupt");
  for (int round = 0; round < RANDOM_ROUNDS + RANDOM_BIG_ROUNDS; round++) {
    size_t n = round < RANDOM_ROUNDS ? 1 + rnd(40) : RANDOM_BIG_N, len, mlen;
    unsigned char *bytes, *m;
    int kind = (int)rnd(6);
    uint64_t d;
    size_t k;
    bool mid = false;
    struct bm_journal_info info;
    bm_journal_t *j;

    for (size_t i = 0; i < n; i++)
      recs[i] = rand_rec();
    bytes = build(path, recs, n, off, &len);
    m = malloc(len + 8192);
    if (!bytes || !m) {
      free(bytes);
      free(m);
      break;
    }
    memcpy(m, bytes, len);
    mlen = len;
    kinds[kind]++;
    switch (kind) {
    case 0: /* truncate anywhere, header included */
      mlen = rnd(len + 1);
      break;
    case 1: /* flip one bit anywhere */
      m[rnd(len)] ^= (unsigned char)(1u << rnd(8));
      break;
    case 2: { /* overwrite a random range with random bytes */
      size_t at = rnd(len), span = 1 + rnd(round < RANDOM_ROUNDS ? 64 : 8000);
      for (size_t i = at; i < at + span && i < len; i++)
        m[i] = (unsigned char)rng();
      break;
    }
    case 3: { /* append garbage */
      size_t extra = 1 + rnd(4000);
      for (size_t i = 0; i < extra; i++)
        m[len + i] = (unsigned char)rng();
      mlen = len + extra;
      break;
    }
    case 4: { /* zeros from somewhere to the end (and beyond) */
      size_t at = HDR + rnd(len - HDR + 1), extra = rnd(2000);
      memset(m + at, 0, len + extra - at);
      mlen = len + extra;
      break;
    }
    case 5: /* a torn record followed by a valid-looking copy of the last
             * record: corruption in the middle */
      if (n >= 2) {
        memmove(m + off[n - 2] + 5, m + off[n - 2],
                (size_t)(off[n] - off[n - 2]));
        mlen = len + 5;
      } else {
        mlen = rnd(len + 1);
      }
      break;
    }

    /* Expectation: the records wholly before the first changed byte. */
    for (d = 0; d < mlen && d < len && m[d] == bytes[d]; d++)
      ;
    k = d < HDR ? 0 : records_before(off, n, d);
    /* Corruption in the middle when a later record of the original is
     * intact at its offset, or shifted (case 5). */
    for (size_t i = k + 1; i < n && d >= HDR && d < len; i++)
      if (off[i + 1] <= mlen && !memcmp(m + off[i], bytes + off[i],
                                        (size_t)(off[i + 1] - off[i])))
        mid = true;
    if (kind == 5 && n >= 2 && d >= HDR)
      mid = true;

    spit(path, m, mlen);
    /* The reader first: same records, nothing changed. */
    coll_reset(&c);
    if (d >= HDR && mlen >= HDR) {
      bad_read += bm_journal_read(path, collect, &c, &info, err,
                                  sizeof(err)) != 0 ||
                  !coll_matches(&c, recs, k, 1) || !same_bytes(path, m, mlen);
    }
    log_reset();
    j = reopen(path, &c, err, sizeof(err));
    rounds++;
    if (!j) {
      bad_open++;
      diag("round %d: %s", round, err);
    } else {
      bad_replay += !coll_matches(&c, recs, k, 1);
      bad_size += bm_journal_size(j) != (d < HDR ? HDR : off[k]) ||
                  fsize(path) != (long long)bm_journal_size(j);
      if (mlen == 0) /* an empty file: a new journal, quietly */
        bad_copy += exists(corrupt) || log_lines != 0;
      else if (d < HDR) /* a bad header: the file aside */
        bad_copy += !same_bytes(corrupt, m, mlen);
      else if (mid)
        bad_copy += !same_bytes(corrupt, m, mlen);
      else
        bad_copy += exists(corrupt);
      bad_log += log_lines != (mlen == 0                ? 0
                               : d < HDR                ? 1
                               : mlen > (size_t)off[k] ? 1
                                                        : 0);
      /* The repaired journal takes the next record and replays it. */
      if (bm_journal_append(j, &recs[0]) != 0 || bm_journal_close(j) != 0) {
        bad_open++;
      } else {
        j = reopen(path, &c, err, sizeof(err));
        bad_replay += !j || c.n != (d < HDR ? 0 : k) + 1 ||
                      !rec_eq(&c.v[c.n - 1], &recs[0]);
        jclose(j);
      }
    }
    remove_journal(path);
    free(m);
    free(bytes);
  }
  diag("%d random rounds (%d of %d records): %d cuts, %d flips, %d overwrites, %d garbage "
       "tails, %d zero tails, %d shifted records",
       rounds, RANDOM_BIG_ROUNDS, RANDOM_BIG_N, kinds[0], kinds[1], kinds[2], kinds[3], kinds[4], kinds[5]);
  is_int(bad_open, 0, "random damage: every journal opens");
  is_int(bad_read, 0, "random damage: the reader sees the intact records and "
                      "changes nothing");
  is_int(bad_replay, 0, "random damage: replay yields exactly the records "
                        "before the damage");
  is_int(bad_size, 0, "random damage: the journal is cut after them");
  is_int(bad_copy, 0, "random damage: kept aside exactly when records follow "
                      "the damage or the header is bad");
  is_int(bad_log, 0, "random damage: one log line per repair, none "
                     "otherwise");
  coll_release(&c);
}

/* Files of random bytes, after a valid header or from the first byte:
 * recovery must neither crash nor read outside them, and finds nothing. */
static void test_random_files(void)
{
  char path[PATH_MAX], corrupt[PATH_MAX], err[256];
  static unsigned char buf[HDR + 70000];
  unsigned char header[HDR];
  struct coll c = {0};
  int bad = 0, files = 0;

  in_dir(path, "noise");
  with_suffix(corrupt, path, ".corrupt");
  remove_journal(path);
  {
    bm_journal_t *j = reopen(path, &c, err, sizeof(err));
    jclose(j);
  }
  {
    size_t hl;
    unsigned char *h = slurp(path, &hl);
    if (!h || hl != HDR)
      return;
    memcpy(header, h, HDR);
    free(h);
  }
  for (int round = 0; round < 200; round++) {
    bool keep_header = round % 2 == 0;
    size_t len = 1 + rnd(round < 190 ? 5000 : 70000);
    bm_journal_t *j;

    memcpy(buf, header, HDR);
    for (size_t i = keep_header ? HDR : 0; i < HDR + len; i++)
      buf[i] = (unsigned char)rng();
    spit(path, buf, HDR + len);
    log_reset();
    j = reopen(path, &c, err, sizeof(err));
    files++;
    bad += !j || c.n != 0 || fsize(path) != HDR || log_lines != 1 ||
           exists(corrupt) == keep_header;
    jclose(j);
    remove_journal(path);
  }
  diag("%d files of random bytes", files);
  is_int(bad, 0, "random bytes: nothing replays, the tail is cut or the file "
                 "put aside, one log line each");
  coll_release(&c);
}

int main(void)
{
  const char *base = getenv("TMPDIR");
  int n = snprintf(tmpdir, sizeof(tmpdir), "%s/bm-journal-test.XXXXXX",
                   base && *base ? base : "/tmp");
  int status;

  if (n < 0 || n >= (int)sizeof(tmpdir) || !mkdtemp(tmpdir)) {
    fprintf(stderr, "cannot create a temporary directory: %s\n",
            strerror(errno));
    return 99;
  }
  diag("working in %s", tmpdir);
  bm_log_set_sink(log_sink, NULL);

  test_names();
  test_documented_sample();
  test_roundtrip();
  test_invalid_records();
  test_truncation();
  test_bit_flips();
  test_tails();
  test_mid_corruption();
  test_headers();
  test_crafted();
  test_compaction();
  test_compaction_failures();
  test_append_failures();
  test_sync();
  test_buffered();
  test_cut();
  test_open_race();
  test_reader();
  test_bad_paths();
  test_random();
  test_random_files();

  bm_log_set_sink(NULL, NULL);
  is_int(close_failures, 0, "every close that had to succeed did");
  status = done_testing();
  if (nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
    fprintf(stderr, "cannot remove %s: %s\n", tmpdir, strerror(errno));
    return 99;
  }
  return status;
}
