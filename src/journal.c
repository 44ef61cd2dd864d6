/*
 * journal.c - see journal.h for the file format, the validity rule and the
 * recovery algorithm.
 *
 * Layout of this file:
 *   - little-endian helpers, record validation, encoding and decoding;
 *   - the reader: a forward-only window of at most JOURNAL_WINDOW bytes
 *     over a file, so recovery of a file of any size uses bounded memory
 *     and never reads outside what pread returned;
 *   - record parsing and the replay loop shared by open and read;
 *   - durable file helpers (write loop, fsync, directory fsync);
 *   - open (create, recover), append, sync, compact, close, read.
 *
 * Every system call that changes a file goes through j->io, which tests
 * replace to inject failures; reads and opens do not.
 */
#include "journal.h"

#include "alloc.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "log.h"
#include "message.h"
#include "relay.h"

/* The format's field sizes must track the types whose values they store:
 * a change there is a change of the on-disk format. */
_Static_assert(BM_JREC_CORR_SIZE == BM_MSG_ID_SIZE, "correlationId size");
_Static_assert(BM_JREC_REASON_SIZE == BM_MSG_STR_SIZE, "reason size");
_Static_assert(BM_JREC_NAME_SIZE == BM_RELAY_NAME_SIZE, "relay name size");
_Static_assert(BM_JREC_ORIGIN_SIZE == BM_ORIGIN_SIZE, "origin size");
_Static_assert(BM_RESULT_SENT == 1 && BM_RESULT_UNAUTHORIZED == 5,
               "RESPONSE.result range");

#define JOURNAL_MAGIC "BMJ1"
#define JOURNAL_VERSION 1u
#define REC_HEAD 13 /* length, type, seq */
#define REC_FRAME (REC_HEAD + 4)
#define JOURNAL_WINDOW (64 * 1024) /* reader window, >= 2 records */
#define JOURNAL_OUT_BUF (64 * 1024) /* compaction write buffer */
#define JOURNAL_BATCH_BUF (32 * 1024) /* bm_journal_append_buffered */
#define JOURNAL_SUFFIX_MAX 16       /* room for ".corrupt.9", ".tmp" */

_Static_assert(JOURNAL_WINDOW >= 2 * BM_JOURNAL_MAX_RECORD, "window size");
_Static_assert(JOURNAL_OUT_BUF >= BM_JOURNAL_MAX_RECORD + 64, "out buffer");
_Static_assert(JOURNAL_BATCH_BUF >= BM_JOURNAL_MAX_RECORD, "batch buffer");

struct bm_journal {
  int fd;                 /* locked with flock(LOCK_EX) */
  enum bm_journal_sync_mode mode;
  struct bm_journal_io io;
  uint64_t size;          /* end of the last record = file size */
  uint64_t next_seq;      /* seq of the next record appended */
  uint64_t base_size;     /* size right after the last compaction, or 0 */
  uint64_t limit;         /* compaction bound */
  bool dirty;             /* appended since the last fsync */
  bool dir_pending;       /* a directory fsync after a rename is owed */
  bool failed;            /* refuses appends until compacted */
  unsigned char *batch;   /* buffered records (JOURNAL_BATCH_BUF), or NULL */
  size_t batch_fill;      /* bytes buffered, to be written at size */
  uint64_t batch_seq;     /* seq of the first buffered record */
  unsigned char rec[BM_JOURNAL_MAX_RECORD]; /* encoding buffer */
  char path[];            /* NUL-terminated */
};

struct bm_journal_snapshot {
  bm_journal_t *j;
  int fd;
  unsigned char *buf;     /* JOURNAL_OUT_BUF bytes, not yet written */
  size_t fill;
  uint64_t off;           /* file offset of buf[0] */
  uint64_t seq;           /* seq of the next record emitted */
  int error;              /* first errno; 0 while all went well */
  const char *failed;     /* the step that set error */
};

/* --- small helpers ----------------------------------------------------- */

static void __attribute__((format(printf, 3, 4)))
set_err(char *err, size_t errlen, const char *fmt, ...)
{
  va_list ap;
  if (!err || errlen == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* out = path followed by suffix.  Returns 0, or -1 with errno
 * ENAMETOOLONG when that does not fit in size bytes. */
static int name_with_suffix(char *out, size_t size, const char *path,
                            const char *suffix)
{
  int n = snprintf(out, size, "%s%s", path, suffix);
  if (n < 0 || (size_t)n >= size) {
    errno = ENAMETOOLONG;
    return -1;
  }
  return 0;
}

static int64_t wall_ms(void)
{
  struct timespec ts;
  if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
    return 0;
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void put_u16(unsigned char *p, uint16_t v)
{
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
}

static void put_u32(unsigned char *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static uint16_t get_u16(const unsigned char *p)
{
  return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get_u32(const unsigned char *p)
{
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p)
{
  return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

const char *bm_jrec_type_name(enum bm_jrec_type type)
{
  switch (type) {
  case BM_JREC_COMMAND:
    return "command";
  case BM_JREC_RESPONSE:
    return "response";
  case BM_JREC_CONFIRM:
    return "confirm";
  case BM_JREC_TIMEOUT:
    return "timeout";
  case BM_JREC_GIVE_UP:
    return "give_up";
  case BM_JREC_STATE:
    return "state";
  case BM_JREC_SEQ:
    return "seq";
  }
  return NULL;
}

int bm_journal_sync_mode_parse(const char *s, enum bm_journal_sync_mode *out)
{
  if (s && strcasecmp(s, "none") == 0)
    *out = BM_JOURNAL_SYNC_NONE;
  else if (s && strcasecmp(s, "always") == 0)
    *out = BM_JOURNAL_SYNC_ALWAYS;
  else if (s && strcasecmp(s, "full") == 0)
    *out = BM_JOURNAL_SYNC_FULL;
  else
    return -1;
  return 0;
}

/* --- record validation, encoding, decoding ----------------------------- */

static bool type_known(int type)
{
  return type >= BM_JREC_COMMAND && type <= BM_JREC_SEQ;
}

/* s is NUL-terminated within size bytes, and non-empty if required. */
static bool str_ok(const char *s, size_t size, bool required)
{
  const char *nul = memchr(s, '\0', size);
  return nul && (!required || nul != s);
}

static bool output_ok(int output) { return output >= 0 && output <= 65535; }
static bool status_ok(int status) { return status == 0 || status == 1; }

/* The invariants of struct bm_jrec (journal.h), shared by append (the
 * caller's record) and replay (a decoded one). */
static bool jrec_valid(const struct bm_jrec *r)
{
  switch (r->type) {
  case BM_JREC_COMMAND: {
    const struct bm_jrec_command *c = &r->u.command;
    return str_ok(c->corr, sizeof(c->corr), true) &&
           str_ok(c->relay, sizeof(c->relay), false) &&
           str_ok(c->origin, sizeof(c->origin), false) &&
           output_ok(c->output) && status_ok(c->status) && c->attempt >= 0;
  }
  case BM_JREC_RESPONSE: {
    const struct bm_jrec_response *s = &r->u.response;
    return str_ok(s->corr, sizeof(s->corr), true) &&
           str_ok(s->reason, sizeof(s->reason), false) &&
           s->result >= BM_RESULT_SENT && s->result <= BM_RESULT_UNAUTHORIZED;
  }
  case BM_JREC_CONFIRM: {
    const struct bm_jrec_confirm *c = &r->u.confirm;
    return str_ok(c->corr, sizeof(c->corr), false) && output_ok(c->output) &&
           status_ok(c->status);
  }
  case BM_JREC_TIMEOUT:
    return str_ok(r->u.timeout.corr, sizeof(r->u.timeout.corr), true);
  case BM_JREC_GIVE_UP:
    return str_ok(r->u.give_up.relay, sizeof(r->u.give_up.relay), false) &&
           output_ok(r->u.give_up.output);
  case BM_JREC_STATE: {
    const struct bm_jrec_state *s = &r->u.state;
    if (!str_ok(s->relay, sizeof(s->relay), false) || !output_ok(s->output) ||
        s->confirmed < -1 || s->confirmed > 1 || s->by_command < 0 ||
        s->by_command > 1 || s->n_applied < 0 || s->n_switches < 0 ||
        s->n_switches > BM_JREC_SWITCHES_MAX ||
        s->n_applied > BM_JREC_APPLIED_MAX)
      return false;
    for (int i = 0; i < s->n_applied; i++)
      if (!str_ok(s->applied[i], sizeof(s->applied[i]), true))
        return false;
    return true;
  }
  case BM_JREC_SEQ:
    return true;
  }
  return false;
}

/* An output cursor over a buffer the caller sized for the largest record:
 * overflowing it is a bug, hence asserts. */
struct enc {
  unsigned char *p;
  size_t n, cap;
};

static void enc_u8(struct enc *e, uint8_t v)
{
  assert(e->n + 1 <= e->cap);
  e->p[e->n++] = v;
}

static void enc_u16(struct enc *e, uint16_t v)
{
  assert(e->n + 2 <= e->cap);
  put_u16(e->p + e->n, v);
  e->n += 2;
}

static void enc_u32(struct enc *e, uint32_t v)
{
  assert(e->n + 4 <= e->cap);
  put_u32(e->p + e->n, v);
  e->n += 4;
}

static void enc_u64(struct enc *e, uint64_t v)
{
  assert(e->n + 8 <= e->cap);
  put_u64(e->p + e->n, v);
  e->n += 8;
}

static void enc_str(struct enc *e, const char *s)
{
  size_t n = strlen(s);
  assert(n <= UINT16_MAX && e->n + 2 + n <= e->cap);
  enc_u16(e, (uint16_t)n);
  memcpy(e->p + e->n, s, n);
  e->n += n;
}

/* Encodes r as the record numbered seq into buf (cap bytes, at least
 * BM_JOURNAL_MAX_RECORD).  Returns the record's length, or 0 with errno
 * EINVAL when r breaks an invariant. */
static size_t jrec_encode(const struct bm_jrec *r, uint64_t seq,
                          unsigned char *buf, size_t cap)
{
  struct enc e = {buf, REC_HEAD, cap};

  assert(cap >= BM_JOURNAL_MAX_RECORD);
  if (!jrec_valid(r)) {
    errno = EINVAL;
    return 0;
  }
  enc_u64(&e, (uint64_t)r->time_ms);
  switch (r->type) {
  case BM_JREC_COMMAND: {
    const struct bm_jrec_command *c = &r->u.command;
    enc_u64(&e, c->cmd_seq);
    enc_u64(&e, (uint64_t)c->resource_id);
    enc_u16(&e, (uint16_t)c->output);
    enc_u8(&e, (uint8_t)c->status);
    enc_u32(&e, (uint32_t)c->attempt);
    enc_str(&e, c->corr);
    enc_str(&e, c->relay);
    enc_str(&e, c->origin);
    break;
  }
  case BM_JREC_RESPONSE:
    enc_u8(&e, (uint8_t)r->u.response.result);
    enc_str(&e, r->u.response.corr);
    enc_str(&e, r->u.response.reason);
    break;
  case BM_JREC_CONFIRM:
    enc_u64(&e, (uint64_t)r->u.confirm.resource_id);
    enc_u16(&e, (uint16_t)r->u.confirm.output);
    enc_u8(&e, (uint8_t)r->u.confirm.status);
    enc_str(&e, r->u.confirm.corr);
    break;
  case BM_JREC_TIMEOUT:
    enc_str(&e, r->u.timeout.corr);
    break;
  case BM_JREC_GIVE_UP:
    enc_u64(&e, (uint64_t)r->u.give_up.resource_id);
    enc_u16(&e, (uint16_t)r->u.give_up.output);
    enc_str(&e, r->u.give_up.relay);
    break;
  case BM_JREC_STATE: {
    const struct bm_jrec_state *s = &r->u.state;
    enc_u64(&e, (uint64_t)s->resource_id);
    enc_u16(&e, (uint16_t)s->output);
    enc_u8(&e, (uint8_t)(int8_t)s->confirmed);
    enc_u8(&e, (uint8_t)s->by_command);
    enc_u64(&e, s->applied_seq);
    enc_str(&e, s->relay);
    enc_u8(&e, (uint8_t)s->n_applied);
    for (int i = 0; i < s->n_applied; i++)
      enc_str(&e, s->applied[i]);
    enc_u8(&e, (uint8_t)s->n_switches);
    for (int i = 0; i < s->n_switches; i++)
      enc_u64(&e, (uint64_t)s->switches[i]);
    break;
  }
  case BM_JREC_SEQ:
    enc_u64(&e, r->u.seq.cmd_seq);
    break;
  }
  assert(e.n - REC_HEAD <= BM_JOURNAL_MAX_PAYLOAD);
  put_u32(buf, (uint32_t)(e.n - REC_HEAD));
  buf[4] = (uint8_t)r->type;
  put_u64(buf + 5, seq);
  enc_u32(&e, bm_crc32c(0, buf, e.n));
  return e.n;
}

/* An input cursor over an untrusted payload: every read is bounds-checked
 * and a failed one marks the cursor bad and yields zeros. */
struct dec {
  const unsigned char *p;
  size_t n, at;
  bool bad;
};

static const unsigned char *dec_take(struct dec *d, size_t n)
{
  const unsigned char *q;
  if (d->bad || d->n - d->at < n) {
    d->bad = true;
    return NULL;
  }
  q = d->p + d->at;
  d->at += n;
  return q;
}

static uint8_t dec_u8(struct dec *d)
{
  const unsigned char *q = dec_take(d, 1);
  return q ? q[0] : 0;
}

static uint16_t dec_u16(struct dec *d)
{
  const unsigned char *q = dec_take(d, 2);
  return q ? get_u16(q) : 0;
}

static uint32_t dec_u32(struct dec *d)
{
  const unsigned char *q = dec_take(d, 4);
  return q ? get_u32(q) : 0;
}

static uint64_t dec_u64(struct dec *d)
{
  const unsigned char *q = dec_take(d, 8);
  return q ? get_u64(q) : 0;
}

/* A str into out (size bytes): too long for out, or holding a NUL, is bad.
 * out stays "" when bad. */
static void dec_str(struct dec *d, char *out, size_t size)
{
  uint16_t n = dec_u16(d);
  const unsigned char *q;

  if (d->bad)
    return;
  if (n >= size) {
    d->bad = true;
    return;
  }
  q = dec_take(d, n);
  if (!q || memchr(q, '\0', n)) {
    d->bad = true;
    return;
  }
  memcpy(out, q, n);
  out[n] = '\0';
}

/* Decodes a payload of the given type.  Returns 0, or -1 when it is not
 * exactly one valid payload of that type. */
static int jrec_decode(int type, const unsigned char *p, size_t n,
                       struct bm_jrec *out)
{
  struct dec d = {p, n, 0, false};

  memset(out, 0, sizeof(*out));
  out->type = (enum bm_jrec_type)type;
  out->time_ms = (int64_t)dec_u64(&d);
  switch (type) {
  case BM_JREC_COMMAND: {
    struct bm_jrec_command *c = &out->u.command;
    uint32_t attempt;
    c->cmd_seq = dec_u64(&d);
    c->resource_id = (int64_t)dec_u64(&d);
    c->output = dec_u16(&d);
    c->status = dec_u8(&d);
    attempt = dec_u32(&d);
    if (attempt > INT32_MAX)
      return -1;
    c->attempt = (int)attempt;
    dec_str(&d, c->corr, sizeof(c->corr));
    dec_str(&d, c->relay, sizeof(c->relay));
    dec_str(&d, c->origin, sizeof(c->origin));
    break;
  }
  case BM_JREC_RESPONSE:
    out->u.response.result = dec_u8(&d);
    dec_str(&d, out->u.response.corr, sizeof(out->u.response.corr));
    dec_str(&d, out->u.response.reason, sizeof(out->u.response.reason));
    break;
  case BM_JREC_CONFIRM:
    out->u.confirm.resource_id = (int64_t)dec_u64(&d);
    out->u.confirm.output = dec_u16(&d);
    out->u.confirm.status = dec_u8(&d);
    dec_str(&d, out->u.confirm.corr, sizeof(out->u.confirm.corr));
    break;
  case BM_JREC_TIMEOUT:
    dec_str(&d, out->u.timeout.corr, sizeof(out->u.timeout.corr));
    break;
  case BM_JREC_GIVE_UP:
    out->u.give_up.resource_id = (int64_t)dec_u64(&d);
    out->u.give_up.output = dec_u16(&d);
    dec_str(&d, out->u.give_up.relay, sizeof(out->u.give_up.relay));
    break;
  case BM_JREC_STATE: {
    struct bm_jrec_state *s = &out->u.state;
    s->resource_id = (int64_t)dec_u64(&d);
    s->output = dec_u16(&d);
    s->confirmed = (int8_t)dec_u8(&d);
    s->by_command = dec_u8(&d);
    if (s->by_command > 1)
      return -1;
    s->applied_seq = dec_u64(&d);
    dec_str(&d, s->relay, sizeof(s->relay));
    s->n_applied = dec_u8(&d);
    if (s->n_applied > BM_JREC_APPLIED_MAX)
      return -1;
    for (int i = 0; i < s->n_applied; i++)
      dec_str(&d, s->applied[i], sizeof(s->applied[i]));
    s->n_switches = dec_u8(&d);
    if (s->n_switches > BM_JREC_SWITCHES_MAX)
      return -1;
    for (int i = 0; i < s->n_switches; i++)
      s->switches[i] = (int64_t)dec_u64(&d);
    break;
  }
  case BM_JREC_SEQ:
    out->u.seq.cmd_seq = dec_u64(&d);
    break;
  default:
    return -1;
  }
  if (d.bad || d.at != n || !jrec_valid(out))
    return -1;
  return 0;
}

/* --- the header -------------------------------------------------------- */

struct header {
  int64_t created_ms;
  uint64_t first_seq;
};

static void header_encode(unsigned char *p, const struct header *h)
{
  memcpy(p, JOURNAL_MAGIC, 4);
  put_u32(p + 4, JOURNAL_VERSION);
  put_u64(p + 8, (uint64_t)h->created_ms);
  put_u64(p + 16, h->first_seq);
  put_u32(p + 24, bm_crc32c(0, p, 24));
}

/* Parses the n bytes read from the start of a file.  Returns NULL and
 * fills h when they start with a valid header, else what is wrong. */
static const char *header_parse(const unsigned char *p, size_t n,
                                struct header *h)
{
  if (n < BM_JOURNAL_HEADER_SIZE)
    return "file shorter than the header";
  if (memcmp(p, JOURNAL_MAGIC, 4) != 0)
    return "bad magic";
  if (get_u32(p + 4) != JOURNAL_VERSION)
    return "unsupported format version";
  if (get_u32(p + 24) != bm_crc32c(0, p, 24))
    return "bad header checksum";
  h->created_ms = (int64_t)get_u64(p + 8);
  h->first_seq = get_u64(p + 16);
  if (h->first_seq == 0)
    return "first sequence number 0";
  return NULL;
}

/* --- the reader -------------------------------------------------------- */

/* A forward-only window over a file: requests may only move forward
 * (off >= base), so a file of any size is read with JOURNAL_WINDOW bytes. */
struct reader {
  int fd;
  unsigned char *buf;
  uint64_t base; /* file offset of buf[0] */
  size_t fill;   /* bytes of buf holding file data */
  bool eof;      /* a read hit the end of the file: no refills */
};

/* Points *p at the bytes of [off, off + n) that the file has (n at most
 * JOURNAL_WINDOW).  Returns how many there are (fewer than n at the end of
 * the file), or -1 with errno set on a read error. */
static ssize_t reader_get(struct reader *r, uint64_t off, size_t n,
                          const unsigned char **p)
{
  assert(n <= JOURNAL_WINDOW && off >= r->base);
  if (off + n > r->base + r->fill && !r->eof) {
    /* Slide the window to start at off, keeping what it already has. */
    if (off < r->base + r->fill) {
      size_t keep = (size_t)(r->base + r->fill - off);
      memmove(r->buf, r->buf + (off - r->base), keep);
      r->fill = keep;
    } else {
      r->fill = 0;
    }
    r->base = off;
    while (r->fill < JOURNAL_WINDOW) {
      ssize_t got = pread(r->fd, r->buf + r->fill, JOURNAL_WINDOW - r->fill,
                          (off_t)(r->base + r->fill));
      if (got < 0 && errno == EINTR)
        continue;
      if (got < 0)
        return -1;
      if (got == 0) {
        r->eof = true;
        break;
      }
      r->fill += (size_t)got;
    }
  }
  if (off >= r->base + r->fill)
    return 0;
  *p = r->buf + (off - r->base);
  return (ssize_t)(r->base + r->fill - off < n ? r->base + r->fill - off : n);
}

enum rec_status {
  REC_OK,
  REC_EOF,        /* no byte at all: the clean end */
  REC_TORN,       /* the record does not fit in what is left */
  REC_BAD_LENGTH, /* L beyond BM_JOURNAL_MAX_PAYLOAD */
  REC_BAD_TYPE,
  REC_BAD_CRC,
  REC_BAD_SEQ,
  REC_BAD_PAYLOAD,
  REC_IO_ERROR    /* errno set */
};

static const char *rec_status_name(enum rec_status s)
{
  static const char *names[] = {
      "valid record",          "end of file",   "torn record",
      "length beyond maximum", "unknown type",  "bad checksum",
      "wrong sequence number", "invalid payload", "read error"};
  return names[s];
}

/* Parses the record at off.  exact: seq must equal want_seq; else it must
 * be at least want_seq (the search for valid records after corruption).
 * On REC_OK fills *out, *seq and *len (the record's size). */
static enum rec_status rec_parse(struct reader *r, uint64_t off,
                                 uint64_t want_seq, bool exact,
                                 struct bm_jrec *out, uint64_t *seq,
                                 size_t *len)
{
  const unsigned char *p = NULL;
  ssize_t got = reader_get(r, off, REC_HEAD, &p);
  uint32_t plen;
  int type;

  if (got < 0)
    return REC_IO_ERROR;
  if (got == 0)
    return REC_EOF;
  if (got < REC_HEAD)
    return REC_TORN;
  plen = get_u32(p);
  type = p[4];
  if (plen > BM_JOURNAL_MAX_PAYLOAD)
    return REC_BAD_LENGTH;
  if (!type_known(type))
    return REC_BAD_TYPE;
  got = reader_get(r, off, REC_FRAME + plen, &p);
  if (got < 0)
    return REC_IO_ERROR;
  if ((size_t)got < REC_FRAME + plen)
    return REC_TORN;
  if (get_u32(p + REC_HEAD + plen) != bm_crc32c(0, p, REC_HEAD + plen))
    return REC_BAD_CRC;
  *seq = get_u64(p + 5);
  if (exact ? *seq != want_seq : *seq < want_seq)
    return REC_BAD_SEQ;
  if (jrec_decode(type, p + REC_HEAD, plen, out) < 0)
    return REC_BAD_PAYLOAD;
  *len = REC_FRAME + plen;
  return REC_OK;
}

/* Where the records of a file end. */
struct replay_end {
  uint64_t valid_end;     /* offset after the last valid record */
  uint64_t next_seq;      /* seq the next record must have */
  uint64_t records;
  enum rec_status stop;   /* what is at valid_end */
};

/* Replays the records from the header on into cb until the first invalid
 * one.  Returns 0, or -1 on a read error (stop REC_IO_ERROR, errno set) or
 * when cb returned nonzero (errno ECANCELED). */
static int replay(struct reader *r, uint64_t first_seq,
                  bm_journal_replay_cb cb, void *ctx, struct replay_end *end)
{
  struct bm_jrec rec;
  uint64_t seq = 0;
  size_t len = 0;

  end->valid_end = BM_JOURNAL_HEADER_SIZE;
  end->next_seq = first_seq;
  end->records = 0;
  for (;;) {
    end->stop = rec_parse(r, end->valid_end, end->next_seq, true, &rec, &seq,
                          &len);
    if (end->stop == REC_IO_ERROR)
      return -1;
    if (end->stop != REC_OK)
      return 0;
    if (cb && cb(&rec, seq, ctx) != 0) {
      errno = ECANCELED;
      return -1;
    }
    end->valid_end += len;
    end->next_seq++;
    end->records++;
  }
}

/* After corruption at `from`: is there a valid record at any later offset
 * (with seq >= want_seq)?  Returns 1 and its offset in *at, 0 for none,
 * -1 on a read error. */
static int find_valid_after(struct reader *r, uint64_t from, uint64_t size,
                            uint64_t want_seq, uint64_t *at)
{
  struct bm_jrec rec;
  uint64_t seq = 0;
  size_t len = 0;

  for (uint64_t off = from + 1; off + REC_FRAME <= size; off++) {
    enum rec_status s = rec_parse(r, off, want_seq, false, &rec, &seq, &len);
    if (s == REC_IO_ERROR)
      return -1;
    if (s == REC_OK) {
      *at = off;
      return 1;
    }
  }
  return 0;
}

/* --- durable file helpers ---------------------------------------------- */

/* Writes all n bytes at off, surviving EINTR and short writes.  Returns 0,
 * or -1 with errno set (a write of 0 bytes counts as EIO). */
static int write_all(const struct bm_journal_io *io, int fd, const void *buf,
                     size_t n, uint64_t off)
{
  const unsigned char *p = buf;
  while (n > 0) {
    ssize_t w = io->pwrite(fd, p, n, (off_t)off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0)
      return -1;
    if (w == 0) {
      errno = EIO;
      return -1;
    }
    p += w;
    n -= (size_t)w;
    off += (uint64_t)w;
  }
  return 0;
}

static int fsync_retry(const struct bm_journal_io *io, int fd)
{
  int rc;
  do
    rc = io->fsync(fd);
  while (rc < 0 && errno == EINTR);
  return rc;
}

/* Writes the directory part of path (or ".") into dir. */
static void dir_of(const char *path, char *dir, size_t size)
{
  const char *slash = strrchr(path, '/');
  size_t n;

  if (!slash) {
    memcpy(dir, ".", 2);
    return;
  }
  n = slash == path ? 1 : (size_t)(slash - path);
  if (n >= size)
    n = size - 1;
  memcpy(dir, path, n);
  dir[n] = '\0';
}

/* Fsyncs the directory holding path, making a create or rename in it
 * durable.  Returns 0, or -1 with errno set. */
static int fsync_dir_of(const struct bm_journal_io *io, const char *path)
{
  char dir[PATH_MAX];
  int fd, status = -1, saved = 0;

  dir_of(path, dir, sizeof(dir));
  fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  if (fsync_retry(io, fd) < 0) {
    saved = errno;
    goto cleanup;
  }
  status = 0;
cleanup:
  if (close(fd) < 0 && status == 0) {
    saved = errno;
    status = -1;
  }
  if (status < 0)
    errno = saved;
  return status;
}

static const struct bm_journal_io libc_io = {pwrite, fsync, ftruncate, rename};

/* Creates the missing directories above path, mode 0700, each made durable
 * in its parent.  Returns 0, or -1 with err filled. */
static int make_parents(const char *path, char *err, size_t errlen)
{
  char dir[PATH_MAX];
  size_t n = strlen(path);
  char *slash;

  if (n >= sizeof(dir)) {
    set_err(err, errlen, "path too long");
    return -1;
  }
  memcpy(dir, path, n + 1);
  slash = strrchr(dir, '/');
  if (!slash)
    return 0;
  for (char *p = dir + 1; p <= slash; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(dir, 0700) == 0) {
      if (fsync_dir_of(&libc_io, dir) < 0) {
        set_err(err, errlen, "cannot fsync the parent of \"%s\": %s", dir,
                strerror(errno));
        return -1;
      }
    } else if (errno != EEXIST) {
      set_err(err, errlen, "cannot create directory \"%s\": %s", dir,
              strerror(errno));
      return -1;
    }
    *p = '/';
  }
  return 0;
}

/* Locks fd, opened from path, for this journal alone, and checks that it
 * is still the file at path: another process's compaction may have renamed
 * its new file over path between our open and our lock, and closed (so
 * unlocked) the old one, which would then be ours, a file no one reads
 * again.  Returns 0; 1 when fd is no longer path's file (not locked; the
 * caller opens path again); or -1 with err filled. */
static int lock_file(int fd, const char *path, char *err, size_t errlen)
{
  struct stat mine, now;
  bool gone;

  if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
    if (errno == EWOULDBLOCK)
      set_err(err, errlen, "journal \"%s\" is in use by another open journal",
              path);
    else
      set_err(err, errlen, "cannot lock journal \"%s\": %s", path,
              strerror(errno));
    return -1;
  }
  if (fstat(fd, &mine) < 0) {
    set_err(err, errlen, "cannot stat journal \"%s\": %s", path,
            strerror(errno));
    return -1;
  }
  gone = stat(path, &now) < 0;
  if (gone && errno != ENOENT) {
    set_err(err, errlen, "cannot stat journal \"%s\": %s", path,
            strerror(errno));
    return -1;
  }
  if (gone || mine.st_dev != now.st_dev || mine.st_ino != now.st_ino) {
    (void)flock(fd, LOCK_UN);
    return 1;
  }
  return 0;
}

/* Writes the first free <path>.corrupt[.N] name into out.  Returns 0, or
 * -1 when all BM_JOURNAL_CORRUPT_MAX are taken or one cannot be checked. */
static int corrupt_name(const char *path, char *out, size_t size)
{
  struct stat st;
  char suffix[JOURNAL_SUFFIX_MAX];

  for (int i = 0; i < BM_JOURNAL_CORRUPT_MAX; i++) {
    int n = i == 0 ? snprintf(suffix, sizeof(suffix), ".corrupt")
                   : snprintf(suffix, sizeof(suffix), ".corrupt.%d", i);
    if (n < 0 || (size_t)n >= sizeof(suffix) ||
        name_with_suffix(out, size, path, suffix) < 0)
      return -1;
    if (lstat(out, &st) < 0 && errno == ENOENT)
      return 0;
  }
  errno = EEXIST;
  return -1;
}

/* Copies the first size bytes of fd into a new file at name (which must
 * not exist), fsyncs it and its directory.  Returns 0, or -1 with errno
 * set and no file left behind. */
static int copy_file(int fd, uint64_t size, const char *name)
{
  unsigned char *buf = NULL;
  int out = -1, status = -1, saved = 0;
  uint64_t off = 0;

  buf = bm_malloc(JOURNAL_WINDOW);
  if (!buf) {
    saved = errno;
    goto cleanup;
  }
  out = open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (out < 0) {
    saved = errno;
    goto cleanup;
  }
  while (off < size) {
    size_t want = size - off < JOURNAL_WINDOW ? (size_t)(size - off)
                                              : JOURNAL_WINDOW;
    ssize_t got = pread(fd, buf, want, (off_t)off);
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0) {
      saved = got < 0 ? errno : EIO;
      goto cleanup;
    }
    if (write_all(&libc_io, out, buf, (size_t)got, off) < 0) {
      saved = errno;
      goto cleanup;
    }
    off += (uint64_t)got;
  }
  if (fsync_retry(&libc_io, out) < 0 || fsync_dir_of(&libc_io, name) < 0) {
    saved = errno;
    goto cleanup;
  }
  status = 0;
cleanup:
  if (out >= 0 && close(out) < 0 && status == 0) {
    saved = errno;
    status = -1;
  }
  if (status < 0 && out >= 0 && unlink(name) < 0)
    BM_WARNING("cannot remove partial copy \"%s\": %s", name,
               strerror(errno));
  free(buf);
  if (status < 0)
    errno = saved;
  return status;
}

/* --- open -------------------------------------------------------------- */

/* Creates a new, empty journal file at j->path (which must not exist):
 * header, fsync, directory fsync.  Sets j->fd, j->size, j->next_seq.
 * Returns 0, or -1 with err filled. */
static int journal_create(bm_journal_t *j, char *err, size_t errlen)
{
  unsigned char hdr[BM_JOURNAL_HEADER_SIZE];
  struct header h = {wall_ms(), 1};
  int fd = -1, status = -1;
  bool locked = false;

  fd = open(j->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    set_err(err, errlen, "cannot create journal \"%s\": %s", j->path,
            strerror(errno));
    goto cleanup;
  }
  /* Another process may open the new, empty file before the lock: it then
   * owns the journal, and this open fails; or replace it at once (its
   * compaction): then too. */
  switch (lock_file(fd, j->path, err, errlen)) {
  case 0:
    break;
  case 1:
    set_err(err, errlen, "journal \"%s\" is in use by another open journal",
            j->path);
    goto cleanup;
  default:
    goto cleanup;
  }
  locked = true;
  header_encode(hdr, &h);
  if (write_all(&libc_io, fd, hdr, sizeof(hdr), 0) < 0 ||
      fsync_retry(&libc_io, fd) < 0 || fsync_dir_of(&libc_io, j->path) < 0) {
    set_err(err, errlen, "cannot write journal \"%s\": %s", j->path,
            strerror(errno));
    goto cleanup;
  }
  j->fd = fd;
  fd = -1;
  j->size = BM_JOURNAL_HEADER_SIZE;
  j->next_seq = h.first_seq;
  status = 0;
cleanup:
  if (fd >= 0) {
    /* A header this process could not write is worth nothing: remove the
     * file so the next open starts afresh instead of keeping it aside. */
    if (locked && unlink(j->path) < 0)
      BM_WARNING("cannot remove \"%s\": %s", j->path, strerror(errno));
    if (close(fd) < 0)
      BM_WARNING("cannot close \"%s\": %s", j->path, strerror(errno));
  }
  return status;
}

/* Writes a fresh header over an empty file (fd, locked).  Returns 0, or -1
 * with err filled. */
static int journal_init_empty(bm_journal_t *j, int fd, char *err,
                              size_t errlen)
{
  unsigned char hdr[BM_JOURNAL_HEADER_SIZE];
  struct header h = {wall_ms(), 1};

  header_encode(hdr, &h);
  if (write_all(&libc_io, fd, hdr, sizeof(hdr), 0) < 0 ||
      fsync_retry(&libc_io, fd) < 0) {
    set_err(err, errlen, "cannot write journal \"%s\": %s", j->path,
            strerror(errno));
    return -1;
  }
  j->size = BM_JOURNAL_HEADER_SIZE;
  j->next_seq = h.first_seq;
  return 0;
}

/* Cuts the file (fd, of `size` bytes) at the end of its valid region and
 * fsyncs the cut; with `mid` (a valid record found at offset `later`, after
 * the corruption) keeps a copy of the whole file first.  Returns 0, or -1
 * with err filled and the file unchanged. */
static int journal_cut(bm_journal_t *j, int fd, uint64_t size,
                       const struct replay_end *end, bool mid, uint64_t later,
                       char *err, size_t errlen)
{
  char copy[PATH_MAX];
  uint64_t dropped = size - end->valid_end;

  if (mid) {
    if (corrupt_name(j->path, copy, sizeof(copy)) < 0) {
      set_err(err, errlen,
              "journal \"%s\" is corrupt at offset %" PRIu64
              " (%s) and no .corrupt name is free for a copy; remove old "
              "copies",
              j->path, end->valid_end, rec_status_name(end->stop));
      return -1;
    }
    if (copy_file(fd, size, copy) < 0) {
      set_err(err, errlen,
              "journal \"%s\" is corrupt at offset %" PRIu64
              " and copying it to \"%s\" failed: %s",
              j->path, end->valid_end, copy, strerror(errno));
      return -1;
    }
  }
  if (ftruncate(fd, (off_t)end->valid_end) < 0 ||
      fsync_retry(&libc_io, fd) < 0) {
    set_err(err, errlen, "cannot truncate journal \"%s\": %s", j->path,
            strerror(errno));
    return -1;
  }
  if (mid)
    BM_ERROR("journal \"%s\" is corrupt at offset %" PRIu64
             " (%s) and has a valid record after it at offset %" PRIu64
             ": kept a copy in \"%s\" and dropped %" PRIu64 " bytes",
             j->path, end->valid_end, rec_status_name(end->stop), later,
             copy, dropped);
  else
    BM_WARNING("journal \"%s\" ends in a torn record at offset %" PRIu64
               " (%s): dropped %" PRIu64 " bytes",
               j->path, end->valid_end, rec_status_name(end->stop), dropped);
  return 0;
}

/* Recovers the existing journal file fd (locked): replay, then cut what
 * follows the valid region.  On a bad header, moves the file aside and
 * creates a new one (*fdp then is -1 and j->fd set).  Returns 0, or -1 with
 * err filled. */
static int journal_recover(bm_journal_t *j, int *fdp,
                           bm_journal_replay_cb cb, void *ctx, char *err,
                           size_t errlen)
{
  struct reader r = {*fdp, NULL, 0, 0, false};
  struct replay_end end;
  struct header h = {0, 0};
  struct stat st;
  const unsigned char *p = NULL;
  const char *bad;
  char aside[PATH_MAX];
  ssize_t got;
  uint64_t later = 0;
  int status = -1, found;

  if (fstat(*fdp, &st) < 0) {
    set_err(err, errlen, "cannot stat journal \"%s\": %s", j->path,
            strerror(errno));
    goto cleanup;
  }
  if (st.st_size == 0) {
    status = journal_init_empty(j, *fdp, err, errlen);
    goto cleanup;
  }
  r.buf = bm_malloc(JOURNAL_WINDOW);
  if (!r.buf) {
    set_err(err, errlen, "out of memory");
    goto cleanup;
  }

  /* 1. The header: a bad one puts the whole file aside. */
  got = reader_get(&r, 0, BM_JOURNAL_HEADER_SIZE, &p);
  if (got < 0) {
    set_err(err, errlen, "cannot read journal \"%s\": %s", j->path,
            strerror(errno));
    goto cleanup;
  }
  bad = header_parse(p, (size_t)got, &h);
  if (bad) {
    if (corrupt_name(j->path, aside, sizeof(aside)) < 0) {
      set_err(err, errlen,
              "journal \"%s\" has a bad header (%s) and no .corrupt name is "
              "free; remove old copies",
              j->path, bad);
      goto cleanup;
    }
    if (rename(j->path, aside) < 0) {
      set_err(err, errlen, "cannot move journal \"%s\" aside: %s", j->path,
              strerror(errno));
      goto cleanup;
    }
    BM_ERROR("journal \"%s\" has a bad header (%s): moved it to \"%s\" and "
             "started a new journal",
             j->path, bad, aside);
    if (close(*fdp) < 0)
      BM_WARNING("cannot close \"%s\": %s", aside, strerror(errno));
    *fdp = -1;
    status = journal_create(j, err, errlen);
    goto cleanup;
  }

  /* 2. Replay the valid region. */
  if (replay(&r, h.first_seq, cb, ctx, &end) < 0) {
    if (end.stop == REC_IO_ERROR)
      set_err(err, errlen, "cannot read journal \"%s\": %s", j->path,
              strerror(errno));
    else
      set_err(err, errlen,
              "replaying journal \"%s\" failed at record %" PRIu64, j->path,
              end.next_seq);
    goto cleanup;
  }

  /* 3. Whatever follows it is either a torn tail or corruption in the
   * middle, told apart by whether a valid record follows. */
  if (end.valid_end < (uint64_t)st.st_size) {
    found = find_valid_after(&r, end.valid_end, (uint64_t)st.st_size,
                             end.next_seq, &later);
    if (found < 0) {
      set_err(err, errlen, "cannot read journal \"%s\": %s", j->path,
              strerror(errno));
      goto cleanup;
    }
    if (journal_cut(j, *fdp, (uint64_t)st.st_size, &end, found == 1, later,
                    err, errlen) < 0)
      goto cleanup;
  }
  j->size = end.valid_end;
  j->next_seq = end.next_seq;
  status = 0;
cleanup:
  free(r.buf);
  return status;
}

bm_journal_t *bm_journal_open(const char *path,
                              enum bm_journal_sync_mode mode,
                              bm_journal_replay_cb replay_cb, void *ctx,
                              char *err, size_t errlen)
{
  bm_journal_t *j = NULL, *ret = NULL;
  char tmp[PATH_MAX];
  size_t n;
  int fd = -1;

  set_err(err, errlen, "no error");
  if (!path || !*path) {
    set_err(err, errlen, "empty journal path");
    goto cleanup;
  }
  n = strlen(path);
  if (n + JOURNAL_SUFFIX_MAX >= PATH_MAX) {
    set_err(err, errlen, "journal path too long");
    goto cleanup;
  }
  j = bm_calloc(1, sizeof(*j) + n + 1);
  if (!j) {
    set_err(err, errlen, "out of memory");
    goto cleanup;
  }
  memcpy(j->path, path, n + 1);
  j->fd = -1;
  j->mode = mode;
  j->io = libc_io;
  j->limit = BM_JOURNAL_DEFAULT_LIMIT;
  if (make_parents(path, err, errlen) < 0)
    goto cleanup;

  /* Opened again when the file was replaced before we held its lock (a
   * few times at most: another process compacting in a loop is a bug). */
  for (int tries = 0;; tries++) {
    int rc;

    fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
      break;
    if ((rc = lock_file(fd, path, err, errlen)) <= 0) {
      if (rc < 0)
        goto cleanup;
      break;
    }
    (void)close(fd); /* read nothing, wrote nothing */
    fd = -1;
    if (tries == 3) {
      set_err(err, errlen, "journal \"%s\" was replaced by another "
                           "process each time it was opened",
              path);
      goto cleanup;
    }
  }
  if (fd < 0 && errno == ENOENT) {
    if (journal_create(j, err, errlen) < 0)
      goto cleanup;
  } else if (fd < 0) {
    set_err(err, errlen, "cannot open journal \"%s\": %s", path,
            strerror(errno));
    goto cleanup;
  } else {
    if (journal_recover(j, &fd, replay_cb, ctx, err, errlen) < 0)
      goto cleanup;
    if (fd >= 0) {
      j->fd = fd;
      fd = -1;
    }
  }

  /* A compaction that crashed leaves its temporary file: it was never the
   * journal, so it goes. */
  if (name_with_suffix(tmp, sizeof(tmp), path, ".tmp") == 0 &&
      unlink(tmp) < 0 && errno != ENOENT)
    BM_WARNING("cannot remove \"%s\": %s", tmp, strerror(errno));
  ret = j;
  j = NULL;
cleanup:
  if (fd >= 0 && close(fd) < 0)
    BM_WARNING("cannot close \"%s\": %s", path, strerror(errno));
  if (j && j->fd >= 0 && close(j->fd) < 0)
    BM_WARNING("cannot close \"%s\": %s", path, strerror(errno));
  free(j);
  return ret;
}

/* --- append, sync, close ----------------------------------------------- */

void bm_journal_set_io(bm_journal_t *j, const struct bm_journal_io *io)
{
  j->io = libc_io;
  if (!io)
    return;
  if (io->pwrite)
    j->io.pwrite = io->pwrite;
  if (io->fsync)
    j->io.fsync = io->fsync;
  if (io->ftruncate)
    j->io.ftruncate = io->ftruncate;
  if (io->rename)
    j->io.rename = io->rename;
}

/* Cuts the file back to size bytes (what names the records cut, for the
 * log).  Returns 0, or -1 with errno set: then the journal is failed (the
 * records may be in the file) and the failure logged. */
static int cut_file(bm_journal_t *j, uint64_t size, const char *what)
{
  int rc;

  do
    rc = j->io.ftruncate(j->fd, (off_t)size);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    int saved = errno;
    j->failed = true;
    BM_ERROR("cannot cut %s off journal \"%s\" at %" PRIu64 " bytes: %s; "
             "refusing appends until the next compaction",
             what, j->path, size, strerror(saved));
    errno = saved;
    return -1;
  }
  return 0;
}

/* Writes n bytes of records at the end of the file.  On failure cuts off
 * whatever part of them reached it (or, when even that fails, makes the
 * journal failed) and returns -1 with the write's errno. */
static int write_records(bm_journal_t *j, const unsigned char *buf, size_t n)
{
  int saved;

  if (write_all(&j->io, j->fd, buf, n, j->size) == 0) {
    j->size += n;
    j->dirty = true;
    return 0;
  }
  saved = errno;
  (void)cut_file(j, j->size, "a failed append"); /* logged */
  errno = saved;
  return -1;
}

int bm_journal_flush(bm_journal_t *j)
{
  size_t n = j->batch_fill;

  if (n == 0)
    return 0;
  j->batch_fill = 0;
  if (j->failed) { /* refused since they were buffered: none is written */
    j->next_seq = j->batch_seq;
    errno = EIO;
    return -1;
  }
  if (write_records(j, j->batch, n) < 0) {
    /* Cut off: their numbers are free again. Not cut off (the journal is
     * failed now): whole records of them may be in the file. */
    if (!j->failed)
      j->next_seq = j->batch_seq;
    return -1;
  }
  return 0;
}

int bm_journal_append(bm_journal_t *j, const struct bm_jrec *rec)
{
  size_t n;

  if (bm_journal_flush(j) < 0)
    return -1;
  if (j->failed) {
    errno = EIO;
    return -1;
  }
  n = jrec_encode(rec, j->next_seq, j->rec, sizeof(j->rec));
  if (n == 0)
    return -1;
  if (write_records(j, j->rec, n) < 0)
    return -1;
  j->next_seq++;
  return 0;
}

int bm_journal_append_buffered(bm_journal_t *j, const struct bm_jrec *rec)
{
  size_t n;

  if (j->failed) {
    errno = EIO;
    return -1;
  }
  if (!j->batch && !(j->batch = bm_malloc(JOURNAL_BATCH_BUF)))
    return bm_journal_append(j, rec); /* written at once instead */
  n = jrec_encode(rec, j->next_seq, j->rec, sizeof(j->rec));
  if (n == 0)
    return -1;
  if (j->batch_fill + n > JOURNAL_BATCH_BUF && bm_journal_flush(j) < 0)
    return -1;
  if (j->batch_fill == 0)
    j->batch_seq = j->next_seq;
  memcpy(j->batch + j->batch_fill, j->rec, n);
  j->batch_fill += n;
  j->next_seq++;
  return 0;
}

int bm_journal_sync(bm_journal_t *j)
{
  if (bm_journal_flush(j) < 0)
    return -1;
  if (j->failed) {
    errno = EIO;
    return -1;
  }
  if (j->mode == BM_JOURNAL_SYNC_NONE)
    return 0;
  if (j->dirty) {
    if (fsync_retry(&j->io, j->fd) < 0) {
      /* After a failed fsync the kernel may have dropped the dirty pages
       * and a retry may well succeed: what is on disk is unknown, so only
       * a full rewrite restores the guarantee. */
      int saved = errno;
      j->failed = true;
      BM_ERROR("cannot fsync journal \"%s\": %s; refusing appends until "
               "the next compaction",
               j->path, strerror(saved));
      errno = saved;
      return -1;
    }
    j->dirty = false;
  }
  if (j->dir_pending) {
    if (fsync_dir_of(&j->io, j->path) < 0)
      return -1;
    j->dir_pending = false;
  }
  return 0;
}

uint64_t bm_journal_size(const bm_journal_t *j)
{
  return j->size + j->batch_fill;
}

void bm_journal_mark(const bm_journal_t *j, struct bm_journal_mark *m)
{
  m->size = j->size + j->batch_fill;
  m->seq = j->next_seq;
}

int bm_journal_cut(bm_journal_t *j, const struct bm_journal_mark *m)
{
  uint64_t to;

  if (!j->failed && m->size >= j->size) {
    /* Nothing after the mark reached the file: drop what is buffered
     * after it (a failed flush may have dropped it all already). */
    if (m->size <= j->size + j->batch_fill) {
      j->batch_fill = (size_t)(m->size - j->size);
      j->next_seq = m->seq;
    }
    return 0;
  }
  /* Written after the mark; or, the journal failed, maybe whole records
   * past its known end too (a write whose own cut failed): cut the file
   * back to the mark, or to that end when the mark lies beyond it. */
  j->batch_fill = 0;
  to = m->size < j->size ? m->size : j->size;
  if (cut_file(j, to, "records") < 0)
    return -1;
  j->size = to;
  if (to == m->size)
    j->next_seq = m->seq;
  j->dirty = true;
  return 0;
}

void bm_journal_set_limit(bm_journal_t *j, uint64_t bytes)
{
  j->limit = bytes;
}

bool bm_journal_is_failed(const bm_journal_t *j) { return j->failed; }

bool bm_journal_needs_compaction(const bm_journal_t *j)
{
  return j->size > j->limit && j->size > 4 * j->base_size;
}

int bm_journal_close(bm_journal_t *j)
{
  int status = 0, saved = 0;

  if (!j)
    return 0;
  if (bm_journal_flush(j) < 0) {
    saved = errno;
    status = -1;
  }
  if (j->mode != BM_JOURNAL_SYNC_NONE && (j->dirty || j->dir_pending) &&
      bm_journal_sync(j) < 0 && status == 0) {
    saved = errno;
    status = -1;
  }
  if (close(j->fd) < 0 && status == 0) {
    saved = errno;
    status = -1;
  }
  free(j->batch);
  free(j);
  if (status < 0)
    errno = saved;
  return status;
}

/* --- compaction -------------------------------------------------------- */

/* Writes the buffered bytes.  Returns 0, or -1 with s->error set. */
static int snapshot_flush(struct bm_journal_snapshot *s)
{
  if (s->error)
    return -1;
  if (write_all(&s->j->io, s->fd, s->buf, s->fill, s->off) < 0) {
    s->error = errno;
    s->failed = "write";
    return -1;
  }
  s->off += s->fill;
  s->fill = 0;
  return 0;
}

int bm_journal_snapshot_emit(struct bm_journal_snapshot *s,
                             const struct bm_jrec *rec)
{
  size_t n;

  if (s->error) {
    errno = s->error;
    return -1;
  }
  if (JOURNAL_OUT_BUF - s->fill < BM_JOURNAL_MAX_RECORD &&
      snapshot_flush(s) < 0) {
    errno = s->error;
    return -1;
  }
  n = jrec_encode(rec, s->seq, s->buf + s->fill, JOURNAL_OUT_BUF - s->fill);
  if (n == 0) {
    s->error = errno;
    s->failed = "snapshot (invalid record)";
    return -1;
  }
  s->fill += n;
  s->seq++;
  return 0;
}

int bm_journal_compact(bm_journal_t *j, bm_journal_snapshot_cb cb, void *ctx)
{
  struct bm_journal_snapshot s = {j, -1, NULL, 0, 0, j->next_seq, 0, NULL};
  struct header h = {wall_ms(), j->next_seq};
  char tmp[PATH_MAX];
  const char *step = "allocate";
  int status = -1, saved = 0, rc;
  bool renamed = false;

  /* Buffered records first: the snapshot holds what they say anyway, so a
   * flush that fails (and cuts them off) does not stop the compaction. */
  if (j->batch_fill > 0) {
    (void)bm_journal_flush(j);
    s.seq = h.first_seq = j->next_seq;
  }
  if (name_with_suffix(tmp, sizeof(tmp), j->path, ".tmp") < 0)
    goto fail;
  s.buf = bm_malloc(JOURNAL_OUT_BUF);
  if (!s.buf)
    goto fail;

  /* 1. <path>.tmp, locked before it becomes the journal. */
  step = "create";
  s.fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (s.fd < 0)
    goto fail;
  step = "lock";
  if (flock(s.fd, LOCK_EX | LOCK_NB) < 0)
    goto fail;

  /* 2. Header and snapshot, buffered; records number on from the journal,
   * so sequence numbers never repeat across compactions. */
  header_encode(s.buf, &h);
  s.fill = BM_JOURNAL_HEADER_SIZE;
  step = "snapshot";
  rc = cb(&s, ctx);
  if (s.error) {
    step = s.failed;
    errno = s.error;
    goto fail;
  }
  if (rc != 0) {
    errno = ECANCELED;
    goto fail;
  }
  step = "write";
  if (snapshot_flush(&s) < 0) {
    errno = s.error;
    goto fail;
  }

  /* 3. Durable, then atomically the journal, then the rename durable. */
  step = "fsync";
  if (fsync_retry(&j->io, s.fd) < 0)
    goto fail;
  step = "rename";
  if (j->io.rename(tmp, j->path) < 0)
    goto fail;
  renamed = true;
  if (close(j->fd) < 0)
    BM_WARNING("cannot close the replaced journal \"%s\": %s", j->path,
               strerror(errno));
  j->fd = s.fd;
  s.fd = -1;
  j->size = s.off;
  j->base_size = s.off;
  j->next_seq = s.seq;
  j->dirty = false;
  j->failed = false;
  step = "fsync directory";
  if (fsync_dir_of(&j->io, j->path) < 0) {
    j->dir_pending = true;
    goto fail;
  }
  j->dir_pending = false;
  status = 0;
  goto cleanup;

fail:
  saved = errno;
  BM_ERROR("cannot compact journal \"%s\": %s failed: %s%s", j->path,
           step, strerror(saved),
           renamed ? " (the new journal is in place; the next sync retries)"
                   : " (the old journal stays in use)");
cleanup:
  if (s.fd >= 0) {
    if (close(s.fd) < 0)
      BM_WARNING("cannot close \"%s\": %s", tmp, strerror(errno));
    if (unlink(tmp) < 0)
      BM_WARNING("cannot remove \"%s\": %s", tmp, strerror(errno));
  }
  free(s.buf);
  if (status < 0)
    errno = saved;
  return status;
}

/* --- the read-only reader ---------------------------------------------- */

int bm_journal_read(const char *path, bm_journal_replay_cb cb, void *ctx,
                    struct bm_journal_info *info, char *err, size_t errlen)
{
  struct bm_journal_info local;
  struct reader r = {-1, NULL, 0, 0, false};
  struct replay_end end;
  struct header h = {0, 0};
  struct stat st;
  const unsigned char *p = NULL;
  const char *bad;
  ssize_t got;
  int status = -1;

  if (!info)
    info = &local;
  memset(info, 0, sizeof(*info));
  snprintf(info->stop, sizeof(info->stop), "not read");
  set_err(err, errlen, "no error");
  r.fd = open(path, O_RDONLY | O_CLOEXEC);
  if (r.fd < 0 || fstat(r.fd, &st) < 0) {
    set_err(err, errlen, "cannot open journal \"%s\": %s", path,
            strerror(errno));
    goto cleanup;
  }
  info->file_size = (uint64_t)st.st_size;
  r.buf = bm_malloc(JOURNAL_WINDOW);
  if (!r.buf) {
    set_err(err, errlen, "out of memory");
    goto cleanup;
  }
  got = reader_get(&r, 0, BM_JOURNAL_HEADER_SIZE, &p);
  if (got < 0) {
    set_err(err, errlen, "cannot read journal \"%s\": %s", path,
            strerror(errno));
    goto cleanup;
  }
  bad = header_parse(p, (size_t)got, &h);
  if (bad) {
    set_err(err, errlen, "journal \"%s\": %s", path, bad);
    snprintf(info->stop, sizeof(info->stop), "%s", bad);
    goto cleanup;
  }
  info->created_ms = h.created_ms;
  info->first_seq = h.first_seq;
  if (replay(&r, h.first_seq, cb, ctx, &end) < 0) {
    if (end.stop == REC_IO_ERROR)
      set_err(err, errlen, "cannot read journal \"%s\": %s", path,
              strerror(errno));
    else
      set_err(err, errlen, "reading journal \"%s\" stopped by the callback "
              "at record %" PRIu64, path, end.next_seq);
  } else {
    status = 0;
  }
  info->records = end.records;
  info->valid_end = end.valid_end;
  snprintf(info->stop, sizeof(info->stop), "%s",
           status == 0 || end.stop == REC_IO_ERROR ? rec_status_name(end.stop)
                                                   : "stopped by callback");
cleanup:
  if (r.fd >= 0 && close(r.fd) < 0 && status == 0) {
    set_err(err, errlen, "cannot close journal \"%s\": %s", path,
            strerror(errno));
    status = -1;
  }
  free(r.buf);
  return status;
}
