/*
 * message.c - the gateway's MQTT command API, encoded and decoded.
 *
 * The contract (envelopes, ranges, required fields) is in message.h.  This
 * file adds how it is enforced.
 *
 * Decoding, in order, each step ending the decode at its first error (but
 * for a spare field's, step 5):
 *
 *   1. Size: 1 .. BM_MSG_MAX_SIZE bytes, checked before anything is read.
 *   2. Pre-scan of the raw bytes (one pass, no allocation; a table of the
 *      bytes it stops at lets it skip plain runs).  yajl 2.1 is
 *      lenient where the contract is strict, so the pre-scan rejects what
 *      yajl would let through:
 *        - a NUL byte anywhere (the tree's strings are C strings; this
 *          also gives the clearest error);
 *        - bytes that are not UTF-8 as RFC 3629 defines it.  yajl checks
 *          the byte pattern only and accepts overlong forms ("\xC0\x80"),
 *          UTF-16 surrogates ("\xED\xA0\x80") and code points above
 *          U+10FFFF;
 *        - the escape \u0000 inside a string: yajl decodes it into a NUL,
 *          which would silently truncate the C string;
 *        - '/' outside a string: yajl_tree_parse enables JavaScript
 *          comments, which are not JSON;
 *        - nesting deeper than MSG_MAX_DEPTH: the duplicate-key walk
 *          recurses once per level (the tree builder has the same limit).
 *      The pre-scan only tracks string boundaries and escapes; everything
 *      else about the grammar is left to yajl.
 *   3. The payload parsed into a yajl_tree tree built in an arena on the
 *      stack (jtree.c: the tree yajl_tree_parse would make, without its
 *      malloc per value; a notification parses without touching the
 *      heap).  yajl's error text is cut at its first newline: the lines
 *      after it quote the payload, which may hold a jwtToken.
 *   4. Top level must be an object.  Every object in the tree is checked
 *      for duplicate keys (the tree keeps both members).  Comparing all
 *      pairs would be quadratic, and 64 KiB holds ~10^4 keys; instead each
 *      object's key and value arrays, which the tree owns and which are
 *      freed right after the walk, are sorted together by key (insertion
 *      sort for a message's few members, heap sort for many) and
 *      neighbours compared: O(n log n), no allocation, and lookups by key
 *      still find the right value.
 *   5. messageType selects the envelope; its fields are read in the order
 *      of message.h, each with its type, length and range checked.
 *      Integers are accepted only when yajl's unparsed text is an optional
 *      '-' and digits (so 1.0 and 1e3 are rejected even though their value
 *      is whole) and yajl could represent it as a long long.  The one
 *      kind of error that does not end the decode: a bad spare field
 *      (message.h) is read as absent and its error kept as the decode's
 *      note, in err, unless a later error replaces it.
 *
 * Error messages name the field by its path and never quote a value the
 * caller might consider secret; only the unknown values of messageType and
 * result are echoed, cut to 32 bytes, control characters replaced.
 *
 * Encoding writes compact JSON straight into the caller's buffer through a
 * bounded writer that remembers overflow, so each encoder is a flat list of
 * members and checks the capacity once at the end.  Strings are escaped as
 * RFC 8259 requires: '"', '\\' and the control characters below 0x20
 * (as \b \f \n \r \t, or \u00XX); other bytes, UTF-8 included, are copied.
 */
#include "message.h"

#include <assert.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <yajl/yajl_tree.h>

#include "jtree.h"
#include "str.h"

#define MSG_MAX_DEPTH BM_JTREE_MAX_DEPTH /* nesting of objects and arrays */
#define MSG_YAJL_ERR_SIZE 256
#define MSG_PATH_SIZE 128   /* field path in error messages (truncated) */
#define MSG_ECHO_MAX 32     /* bytes of an unknown enum value echoed */

static const char *const result_names[] = {
    [BM_RESULT_SENT] = "sent",
    [BM_RESULT_NOT_SEND] = "not_send",
    [BM_RESULT_FAILED] = "failed",
    [BM_RESULT_SEND_NO_ACK] = "send_no_ack",
    [BM_RESULT_UNAUTHORIZED] = "unauthorized",
};
#define RESULT_COUNT (sizeof(result_names) / sizeof(result_names[0]))

const char *bm_result_name(enum bm_result r)
{
  if ((int)r <= 0 || (size_t)r >= RESULT_COUNT)
    return NULL;
  return result_names[r];
}

enum bm_result bm_result_parse(const char *name)
{
  if (name == NULL)
    return 0;
  for (size_t i = 1; i < RESULT_COUNT; i++)
    if (strcmp(name, result_names[i]) == 0)
      return (enum bm_result)i;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Decoding                                                             */
/* ------------------------------------------------------------------ */

/* Where a decode writes its error.  err may be NULL (errlen then 0). */
struct msg_dec {
  char *err;
  size_t errlen;
  bool unprintable; /* the pre-scan saw an escape or a DEL in a string:
                     * decoded strings may hold what bm_str_printable
                     * replaces (without, none can) */
  bool noted;       /* err holds a spare field's error (message.h) */
};

static void __attribute__((format(printf, 2, 3)))
msg_fail(struct msg_dec *d, const char *fmt, ...)
{
  va_list ap;

  if (d->err == NULL || d->errlen == 0)
    return;
  va_start(ap, fmt);
  /* A message longer than errlen is cut, as message.h promises. */
  (void)vsnprintf(d->err, d->errlen, fmt, ap);
  va_end(ap);
}

/* Copies at most size - 1 bytes of src into dst; a cut never splits a
 * UTF-8 character. */
static void msg_cut(char *dst, size_t size, const char *src)
{
  size_t n = strnlen(src, size);

  if (n >= size) {
    n = size - 1;
    while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
      n--;
  }
  memcpy(dst, src, n);
  dst[n] = '\0';
}

/* Returns the length of the RFC 3629 UTF-8 sequence starting at p (at most
 * avail bytes, avail >= 1, p[0] >= 0x80), or 0 when it is not one. */
static size_t utf8_sequence_len(const unsigned char *p, size_t avail)
{
  unsigned char lo = 0x80, hi = 0xBF; /* range of the second byte */
  size_t n;

  if (p[0] >= 0xC2 && p[0] <= 0xDF) {
    n = 2;
  } else if (p[0] >= 0xE0 && p[0] <= 0xEF) {
    n = 3;
    if (p[0] == 0xE0)
      lo = 0xA0; /* overlong */
    else if (p[0] == 0xED)
      hi = 0x9F; /* UTF-16 surrogates */
  } else if (p[0] >= 0xF0 && p[0] <= 0xF4) {
    n = 4;
    if (p[0] == 0xF0)
      lo = 0x90; /* overlong */
    else if (p[0] == 0xF4)
      hi = 0x8F; /* above U+10FFFF */
  } else {
    return 0;
  }
  if (avail < n || p[1] < lo || p[1] > hi)
    return 0;
  for (size_t i = 2; i < n; i++)
    if (p[i] < 0x80 || p[i] > 0xBF)
      return 0;
  return n;
}

/* The bytes the pre-scan stops at: inside a string (PRESCAN_IN), outside
 * (PRESCAN_OUT).  Every other byte only moves it on, so it skips runs of
 * them in a tight loop: most of a message is plain ASCII. */
#define PRESCAN_IN 1
#define PRESCAN_OUT 2
static const unsigned char prescan_class[256] = {
    [0] = PRESCAN_IN | PRESCAN_OUT,
    ['"'] = PRESCAN_IN | PRESCAN_OUT,
    ['\\'] = PRESCAN_IN,
    [0x7f] = PRESCAN_IN,
    ['{'] = PRESCAN_OUT,
    ['['] = PRESCAN_OUT,
    ['}'] = PRESCAN_OUT,
    [']'] = PRESCAN_OUT,
    ['/'] = PRESCAN_OUT,
    [0x80 ... 0xFF] = PRESCAN_IN | PRESCAN_OUT,
};

/* Step 2 of the design comment.  Returns 0, or -1 with the error set. */
static int msg_prescan(struct msg_dec *d, const unsigned char *p, size_t len)
{
  bool in_string = false;
  int depth = 0;
  size_t i = 0;

  for (;;) {
    unsigned char stop = in_string ? PRESCAN_IN : PRESCAN_OUT;
    unsigned char c;

    while (i < len && !(prescan_class[p[i]] & stop))
      i++;
    if (i == len)
      return 0;
    c = p[i];
    if (c == 0) {
      msg_fail(d, "invalid JSON: NUL byte at offset %zu", i);
      return -1;
    }
    if (c >= 0x80) {
      size_t n = utf8_sequence_len(p + i, len - i);
      if (n == 0) {
        msg_fail(d, "invalid UTF-8 at offset %zu", i);
        return -1;
      }
      if (c == 0xC2 && p[i + 1] < 0xA0)
        d->unprintable = true; /* a C1 control character, U+0080..U+009F */
      i += n;
      continue;
    }
    if (in_string) {
      if (c == 0x7f) {
        d->unprintable = true;
      } else if (c == '\\') {
        d->unprintable = true;
        if (len - i >= 6 && memcmp(p + i + 1, "u0000", 5) == 0) {
          msg_fail(d, "invalid JSON: \\u0000 in a string at offset %zu", i);
          return -1;
        }
        /* Skip the escaped character unless the loop must check it. */
        if (i + 1 < len && p[i + 1] != 0 && p[i + 1] < 0x80)
          i++;
      } else { /* '"' */
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > MSG_MAX_DEPTH) {
        msg_fail(d, "invalid JSON: nested deeper than %d at offset %zu",
                 MSG_MAX_DEPTH, i);
        return -1;
      }
    } else if (c == '}' || c == ']') {
      depth--; /* a negative depth is yajl's to reject */
    } else { /* '/' */
      msg_fail(d, "invalid JSON: comment at offset %zu", i);
      return -1;
    }
    i++;
  }
}

static void members_swap(yajl_val obj, size_t a, size_t b)
{
  const char *key = obj->u.object.keys[a];
  yajl_val value = obj->u.object.values[a];

  obj->u.object.keys[a] = obj->u.object.keys[b];
  obj->u.object.values[a] = obj->u.object.values[b];
  obj->u.object.keys[b] = key;
  obj->u.object.values[b] = value;
}

static void members_sift_down(yajl_val obj, size_t root, size_t n)
{
  const char **keys = obj->u.object.keys;

  for (;;) {
    size_t child = 2 * root + 1;
    if (child >= n)
      return;
    if (child + 1 < n && strcmp(keys[child], keys[child + 1]) < 0)
      child++;
    if (strcmp(keys[root], keys[child]) >= 0)
      return;
    members_swap(obj, root, child);
    root = child;
  }
}

/* Sorts an object's members by key, keys and values together: by
 * insertion up to MEMBERS_FEW members (a message's objects: fewer
 * comparisons, no call), by heap sort above, where a hostile payload's
 * thousands of keys stay O(n log n). */
#define MEMBERS_FEW 16
static void members_sort(yajl_val obj)
{
  size_t n = obj->u.object.len;

  if (n <= MEMBERS_FEW) {
    const char **keys = obj->u.object.keys;
    yajl_val *values = obj->u.object.values;

    for (size_t i = 1; i < n; i++) {
      const char *key = keys[i];
      yajl_val value = values[i];
      size_t j = i;

      for (; j > 0 && strcmp(keys[j - 1], key) > 0; j--) {
        keys[j] = keys[j - 1];
        values[j] = values[j - 1];
      }
      keys[j] = key;
      values[j] = value;
    }
    return;
  }
  for (size_t i = n / 2; i-- > 0;)
    members_sift_down(obj, i, n);
  for (size_t end = n; end-- > 1;) {
    members_swap(obj, 0, end);
    members_sift_down(obj, 0, end);
  }
}

/* Writes "path.key" (or "key" when path is empty) into child (size
 * MSG_PATH_SIZE), cut as snprintf would cut it: only an error message
 * shows it, and this runs for every nested object of every message. */
static void msg_path_join(char child[MSG_PATH_SIZE], const char *path,
                          const char *key)
{
  size_t used = 0;
  const char *parts[3] = {path, path[0] ? "." : "", key};

  for (size_t k = 0; k < 3; k++) {
    size_t n = strlen(parts[k]);

    if (n > MSG_PATH_SIZE - 1 - used)
      n = MSG_PATH_SIZE - 1 - used;
    memcpy(child + used, parts[k], n);
    used += n;
  }
  child[used] = '\0';
}

/* Step 4: rejects a key that appears twice in any object under v (path
 * names v in error messages, "" for the top level).  Sorts every object's
 * members.  Recursion depth is bounded by the pre-scan. */
static int msg_check_keys(struct msg_dec *d, yajl_val v, const char *path)
{
  char child[MSG_PATH_SIZE];

  if (YAJL_IS_OBJECT(v)) {
    size_t n = v->u.object.len;

    members_sort(v);
    for (size_t i = 0; i < n; i++) {
      const char *key = v->u.object.keys[i];
      yajl_val value = v->u.object.values[i];
      bool dup = i + 1 < n && strcmp(key, v->u.object.keys[i + 1]) == 0;

      /* The path is built only where it may be needed: for an error here,
       * or to descend (most members are scalars: the hot path). */
      if (!dup && !YAJL_IS_OBJECT(value) && !YAJL_IS_ARRAY(value))
        continue;
      msg_path_join(child, path, key);
      if (dup) {
        bm_str_printable(child); /* the keys are the sender's */
        msg_fail(d, "field \"%s\": duplicate key", child);
        return -1;
      }
      if (msg_check_keys(d, value, child) != 0)
        return -1;
    }
  } else if (YAJL_IS_ARRAY(v)) {
    (void)snprintf(child, sizeof(child), "%s[]", path);
    for (size_t i = 0; i < v->u.array.len; i++)
      if (msg_check_keys(d, v->u.array.values[i], child) != 0)
        return -1;
  }
  return 0;
}

/* The member `key` of obj, or NULL.  Keys are unique after step 4.  The
 * first bytes are compared before the call: most keys differ there. */
static yajl_val msg_member(yajl_val obj, const char *key)
{
  for (size_t i = 0; i < obj->u.object.len; i++) {
    const char *k = obj->u.object.keys[i];
    if (k[0] == key[0] && strcmp(k, key) == 0)
      return obj->u.object.values[i];
  }
  return NULL;
}

/* The key of a field path: what follows its last '.'. */
static const char *msg_key_of(const char *field)
{
  const char *dot = strrchr(field, '.');
  return dot ? dot + 1 : field;
}

/* Reads the string member named by the last part of `field` from obj into
 * dst (size dstsize, at least 1), printable (bm_str_printable).  Sets *present
 * (may be NULL).  Returns 0, or -1 when it is missing though required, not
 * a string, or too long. */
static int take_string(struct msg_dec *d, yajl_val obj, const char *field,
                       bool required, char *dst, size_t dstsize,
                       bool *present)
{
  yajl_val v = msg_member(obj, msg_key_of(field));
  size_t n;

  dst[0] = '\0';
  if (present)
    *present = v != NULL;
  if (v == NULL) {
    if (!required)
      return 0;
    msg_fail(d, "field \"%s\": missing", field);
    return -1;
  }
  if (!YAJL_IS_STRING(v)) {
    msg_fail(d, "field \"%s\": expected a string", field);
    return -1;
  }
  n = strlen(v->u.string);
  if (n >= dstsize) {
    msg_fail(d, "field \"%s\": longer than %zu bytes", field, dstsize - 1);
    return -1;
  }
  memcpy(dst, v->u.string, n + 1);
  if (d->unprintable)
    bm_str_printable(dst);
  return 0;
}

/* A correlationId: a required string of 1 .. BM_MSG_ID_SIZE-1 bytes. */
static int take_correlation_id(struct msg_dec *d, yajl_val obj, char *dst)
{
  if (take_string(d, obj, "correlationId", true, dst, BM_MSG_ID_SIZE, NULL))
    return -1;
  if (dst[0] == '\0') {
    msg_fail(d, "field \"correlationId\": empty");
    return -1;
  }
  return 0;
}

/* Reads an integer member in 0..max like take_string.  "1.0", "1e3",
 * strings, booleans and null are not integers. */
static int take_int(struct msg_dec *d, yajl_val obj, const char *field,
                    bool required, int64_t max, int64_t *dst, bool *present)
{
  yajl_val v = msg_member(obj, msg_key_of(field));
  const char *text;

  *dst = 0;
  if (present)
    *present = v != NULL;
  if (v == NULL) {
    if (!required)
      return 0;
    msg_fail(d, "field \"%s\": missing", field);
    return -1;
  }
  if (!YAJL_IS_NUMBER(v)) {
    msg_fail(d, "field \"%s\": expected an integer", field);
    return -1;
  }
  text = YAJL_GET_NUMBER(v);
  if (strspn(text + (text[0] == '-'), "0123456789") !=
      strlen(text + (text[0] == '-'))) {
    msg_fail(d, "field \"%s\": expected an integer", field);
    return -1;
  }
  if (!YAJL_IS_INTEGER(v) || YAJL_GET_INTEGER(v) < 0 ||
      YAJL_GET_INTEGER(v) > max) {
    if (max == 1)
      msg_fail(d, "field \"%s\": expected 0 or 1", field);
    else
      msg_fail(d, "field \"%s\": out of range 0..%" PRId64, field, max);
    return -1;
  }
  *dst = YAJL_GET_INTEGER(v);
  return 0;
}

/* Reads an object member like take_string; *dst is NULL when absent. */
static int take_object(struct msg_dec *d, yajl_val obj, const char *field,
                       bool required, yajl_val *dst)
{
  yajl_val v = msg_member(obj, msg_key_of(field));

  *dst = NULL;
  if (v == NULL) {
    if (!required)
      return 0;
    msg_fail(d, "field \"%s\": missing", field);
    return -1;
  }
  if (!YAJL_IS_OBJECT(v)) {
    msg_fail(d, "field \"%s\": expected an object", field);
    return -1;
  }
  *dst = v;
  return 0;
}

/* The spare fields of an answer (message.h): read like the others, but a
 * bad one reads as absent and the decode goes on, its error kept in err as
 * the decode's note (the first one: later spare errors are not written). */
static struct msg_dec *spare(struct msg_dec *d, struct msg_dec *scratch)
{
  *scratch = *d;
  if (d->noted) {
    scratch->err = NULL;
    scratch->errlen = 0;
  }
  return scratch;
}

static void spare_string(struct msg_dec *d, yajl_val obj, const char *field,
                         char *dst, size_t dstsize)
{
  struct msg_dec scratch;

  if (take_string(spare(d, &scratch), obj, field, false, dst, dstsize, NULL))
    d->noted = true; /* dst is left empty */
}

/* A spare text meant for people (a reason): one too long is cut to dstsize
 * - 1 bytes rather than lost, and the note says so. */
static void spare_text(struct msg_dec *d, yajl_val obj, const char *field,
                       char *dst, size_t dstsize)
{
  struct msg_dec scratch;
  yajl_val v;

  if (take_string(spare(d, &scratch), obj, field, false, dst, dstsize, NULL) ==
      0)
    return;
  v = msg_member(obj, msg_key_of(field));
  if (YAJL_IS_STRING(v)) { /* too long: no other error for a string */
    msg_cut(dst, dstsize, v->u.string);
    if (d->unprintable)
      bm_str_printable(dst);
    if (!d->noted)
      msg_fail(d, "field \"%s\": longer than %zu bytes, cut", field,
               dstsize - 1);
  }
  d->noted = true;
}

static void spare_int(struct msg_dec *d, yajl_val obj, const char *field,
                      int64_t *dst, bool *present)
{
  struct msg_dec scratch;

  if (take_int(spare(d, &scratch), obj, field, false, BM_MSG_MAX_SAFE_INT,
               dst, present)) {
    *present = false; /* *dst is 0 */
    d->noted = true;
  }
}

static void spare_object(struct msg_dec *d, yajl_val obj, const char *field,
                         yajl_val *dst)
{
  struct msg_dec scratch;

  if (take_object(spare(d, &scratch), obj, field, false, dst))
    d->noted = true; /* *dst is NULL */
}

/* resourceId, output and status of a "parameters" object. */
static int take_ext_do(struct msg_dec *d, yajl_val params,
                       struct bm_ext_do *out)
{
  int64_t output = 0, status = 0;

  if (take_int(d, params, "parameters.resourceId", true, BM_MSG_MAX_SAFE_INT,
               &out->resource_id, NULL) ||
      take_int(d, params, "parameters.output", true, 65535, &output, NULL) ||
      take_int(d, params, "parameters.status", true, 1, &status, NULL))
    return -1;
  out->output = (int)output;
  out->status = (int)status;
  return 0;
}

static int decode_command(struct msg_dec *d, yajl_val top,
                          struct bm_command *c)
{
  yajl_val params = NULL;

  memset(c, 0, sizeof(*c));

  if (take_string(d, top, "appId", true, c->app_id, sizeof(c->app_id),
                  NULL) ||
      take_string(d, top, "brand", true, c->brand, sizeof(c->brand), NULL) ||
      take_string(d, top, "jwtToken", true, c->jwt_token,
                  sizeof(c->jwt_token), NULL) ||
      take_int(d, top, "userId", true, BM_MSG_MAX_SAFE_INT, &c->user_id,
               NULL) ||
      take_int(d, top, "organizationId", true, BM_MSG_MAX_SAFE_INT,
               &c->organization_id, NULL) ||
      take_string(d, top, "command", true, c->command, sizeof(c->command),
                  NULL) ||
      take_correlation_id(d, top, c->correlation_id) ||
      take_object(d, top, "parameters", true, &params))
    return -1;
  if (strcmp(c->command, "setExtDO") == 0)
    return take_ext_do(d, params, &c->parameters);
  return 0;
}

static int decode_response(struct msg_dec *d, yajl_val top,
                           struct bm_response *r)
{
  char result[BM_MSG_STR_SIZE];
  yajl_val data = NULL;

  memset(r, 0, sizeof(*r));

  if (take_correlation_id(d, top, r->correlation_id) ||
      take_string(d, top, "result", true, result, sizeof(result), NULL))
    return -1;
  r->result = bm_result_parse(result);
  if (r->result == 0) {
    char echo[MSG_ECHO_MAX + 1];
    msg_cut(echo, sizeof(echo), result); /* printable already (take_string) */
    msg_fail(d, "field \"result\": unknown value \"%s\"", echo);
    return -1;
  }
  spare_text(d, top, "reason", r->reason, sizeof(r->reason));
  spare_object(d, top, "data", &data);
  r->has_data = data != NULL;
  if (data == NULL)
    return 0;
  spare_string(d, data, "data.command", r->data_command,
               sizeof(r->data_command));
  spare_int(d, data, "data.resourceId", &r->resource_id, &r->has_resource_id);
  spare_int(d, data, "data.userId", &r->user_id, &r->has_user_id);
  spare_string(d, data, "data.brand", r->brand, sizeof(r->brand));
  spare_string(d, data, "data.model", r->model, sizeof(r->model));
  spare_string(d, data, "data.networkId", r->network_id,
               sizeof(r->network_id));
  return 0;
}

static int decode_notification(struct msg_dec *d, yajl_val top,
                               struct bm_notification *n)
{
  yajl_val params = NULL;

  memset(n, 0, sizeof(*n));

  if (take_string(d, top, "appId", true, n->app_id, sizeof(n->app_id),
                  NULL) ||
      take_string(d, top, "correlationId", false, n->correlation_id,
                  sizeof(n->correlation_id), NULL) ||
      take_string(d, top, "notificationType", true, n->notification_type,
                  sizeof(n->notification_type), NULL))
    return -1;
  spare_string(d, top, "command", n->command, sizeof(n->command));
  spare_string(d, top, "userName", n->user_name, sizeof(n->user_name));
  spare_int(d, top, "userId", &n->user_id, &n->has_user_id);
  /* "same-as-request-or-omitted": an empty id is no id. */
  n->has_correlation_id = n->correlation_id[0] != '\0';
  n->has_state = strcmp(n->notification_type, "extDOStateChanged") == 0;
  if (!n->has_state)
    return 0;
  if (take_object(d, top, "parameters", true, &params) ||
      take_ext_do(d, params, &n->state))
    return -1;
  spare_string(d, params, "parameters.brand", n->brand, sizeof(n->brand));
  spare_string(d, params, "parameters.model", n->model, sizeof(n->model));
  spare_string(d, params, "parameters.networkId", n->network_id,
               sizeof(n->network_id));
  spare_int(d, params, "parameters.organizationId", &n->organization_id,
            &n->has_organization_id);
  return 0;
}

int bm_msg_decode(const void *payload, size_t len, struct bm_msg *out,
                  char *err, size_t errlen)
{
  struct msg_dec d = {.err = err, .errlen = err ? errlen : 0};
  struct bm_jtree tree;
  char yajl_err[MSG_YAJL_ERR_SIZE];
  char type[BM_MSG_STR_SIZE];
  yajl_val top = NULL;
  enum bm_msg_type kind = 0;
  int status = -1;

  bm_jtree_init(&tree);
  assert(out != NULL);
  /* Only the member decoded is cleared (by its decoder): the union's
   * largest, a commandMessage with its token, is 9 KiB, where a
   * notification is 2 KiB. */
  out->type = 0;
  if (d.errlen > 0)
    d.err[0] = '\0';

  /* 1. Size, before anything is read. */
  if (len == 0 || payload == NULL) {
    msg_fail(&d, "empty payload");
    goto cleanup;
  }
  if (len > BM_MSG_MAX_SIZE) {
    msg_fail(&d, "payload of %zu bytes exceeds the limit of %d bytes", len,
             BM_MSG_MAX_SIZE);
    goto cleanup;
  }

  /* 2. What yajl would let through. */
  if (msg_prescan(&d, payload, len) != 0)
    goto cleanup;

  /* 3. Parse. */
  top = bm_jtree_parse(&tree, payload, len, yajl_err, sizeof(yajl_err));
  if (top == NULL) {
    yajl_err[strcspn(yajl_err, "\r\n")] = '\0';
    msg_fail(&d, "invalid JSON: %s", yajl_err[0] ? yajl_err : "parse error");
    goto cleanup;
  }

  /* 4. Shape and duplicate keys. */
  if (!YAJL_IS_OBJECT(top)) {
    msg_fail(&d, "top level: expected an object");
    goto cleanup;
  }
  if (msg_check_keys(&d, top, "") != 0)
    goto cleanup;

  /* 5. The envelope. */
  if (take_string(&d, top, "messageType", true, type, sizeof(type), NULL))
    goto cleanup;
  if (strcmp(type, "commandMessage") == 0) {
    status = decode_command(&d, top, &out->u.command);
    kind = BM_MSG_COMMAND;
  } else if (strcmp(type, "commandResponse") == 0) {
    status = decode_response(&d, top, &out->u.response);
    kind = BM_MSG_RESPONSE;
  } else if (strcmp(type, "notification") == 0) {
    status = decode_notification(&d, top, &out->u.notification);
    kind = BM_MSG_NOTIFICATION;
  } else {
    char echo[MSG_ECHO_MAX + 1];
    msg_cut(echo, sizeof(echo), type);
    msg_fail(&d, "field \"messageType\": unknown value \"%s\"", echo);
  }

  /* A failed decode leaves type 0, which is no envelope, and no part of a
   * commandMessage's token behind. */
  if (status == 0)
    out->type = kind;
  else if (kind == BM_MSG_COMMAND)
    memset(&out->u.command, 0, sizeof(out->u.command));

cleanup:
  bm_jtree_free(&tree);
  return status;
}

/* ------------------------------------------------------------------ */
/* Encoding                                                             */
/* ------------------------------------------------------------------ */

/* A bounded writer: once a write does not fit, `full` stays set and
 * nothing more is written.  One byte is always kept for the NUL. */
struct msg_out {
  char *buf;
  size_t cap;
  size_t len;
  bool full;
  bool need_comma; /* a member was written in the current object */
};

static void out_raw(struct msg_out *o, const char *s, size_t n)
{
  if (o->full || o->cap - o->len <= n) {
    o->full = true;
    return;
  }
  memcpy(o->buf + o->len, s, n);
  o->len += n;
}

static void out_lit(struct msg_out *o, const char *s)
{
  out_raw(o, s, strlen(s));
}

/* The escape of a byte JSON forbids raw in a string. */
static void out_escape(struct msg_out *o, unsigned char c)
{
  char esc[8];
  int len;

  switch (c) {
  case '"': out_lit(o, "\\\""); return;
  case '\\': out_lit(o, "\\\\"); return;
  case '\b': out_lit(o, "\\b"); return;
  case '\f': out_lit(o, "\\f"); return;
  case '\n': out_lit(o, "\\n"); return;
  case '\r': out_lit(o, "\\r"); return;
  case '\t': out_lit(o, "\\t"); return;
  default: break;
  }
  len = snprintf(esc, sizeof(esc), "\\u%04x", c);
  assert(len == 6);
  out_raw(o, esc, (size_t)len);
}

/* A JSON string of at most max bytes of s (the field's array size), quoted
 * and escaped.  Runs of plain bytes are copied in one piece. */
static void out_string(struct msg_out *o, const char *s, size_t max)
{
  size_t n = strnlen(s, max);
  size_t run = 0; /* plain bytes before i not yet written */

  assert(n < max); /* the struct holds a NUL-terminated string */
  out_lit(o, "\"");
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];

    if (c >= 0x20 && c != '"' && c != '\\') {
      run++;
      continue;
    }
    out_raw(o, s + i - run, run);
    run = 0;
    out_escape(o, c);
  }
  out_raw(o, s + n - run, run);
  out_lit(o, "\"");
}

static void out_int(struct msg_out *o, int64_t v)
{
  char num[24];
  int n = snprintf(num, sizeof(num), "%" PRId64, v);

  assert(n > 0 && (size_t)n < sizeof(num));
  out_raw(o, num, (size_t)n);
}

static void out_open(struct msg_out *o)
{
  out_lit(o, "{");
  o->need_comma = false;
}

static void out_close(struct msg_out *o)
{
  out_lit(o, "}");
  o->need_comma = true;
}

/* `"key":`, preceded by a comma unless it is the object's first member. */
static void out_key(struct msg_out *o, const char *key)
{
  if (o->need_comma)
    out_lit(o, ",");
  out_lit(o, "\"");
  out_lit(o, key);
  out_lit(o, "\":");
  o->need_comma = true;
}

static void out_member_string(struct msg_out *o, const char *key,
                              const char *s, size_t max)
{
  out_key(o, key);
  out_string(o, s, max);
}

static void out_member_int(struct msg_out *o, const char *key, int64_t v)
{
  out_key(o, key);
  out_int(o, v);
}

/* Terminates the JSON; returns its length or -1 when it did not fit. */
static int out_finish(struct msg_out *o)
{
  if (o->full || o->len > (size_t)INT_MAX) {
    if (o->cap > 0)
      o->buf[0] = '\0';
    return -1;
  }
  o->buf[o->len] = '\0';
  return (int)o->len;
}

static void assert_ext_do(const struct bm_ext_do *s)
{
  assert(s->resource_id >= 0 && s->resource_id <= BM_MSG_MAX_SAFE_INT);
  assert(s->output >= 0 && s->output <= 65535);
  assert(s->status == 0 || s->status == 1);
  (void)s;
}

int bm_msg_encode_command(const struct bm_command *c, char *buf, size_t cap)
{
  struct msg_out o = {.buf = buf, .cap = cap};

  assert(buf != NULL || cap == 0);
  assert(c->correlation_id[0] != '\0');
  assert(c->user_id >= 0 && c->user_id <= BM_MSG_MAX_SAFE_INT);
  assert(c->organization_id >= 0 &&
         c->organization_id <= BM_MSG_MAX_SAFE_INT);

  out_open(&o);
  out_member_string(&o, "messageType", "commandMessage", BM_MSG_STR_SIZE);
  out_member_string(&o, "appId", c->app_id, sizeof(c->app_id));
  out_member_string(&o, "brand", c->brand, sizeof(c->brand));
  out_member_string(&o, "jwtToken", c->jwt_token, sizeof(c->jwt_token));
  out_member_int(&o, "userId", c->user_id);
  out_member_int(&o, "organizationId", c->organization_id);
  out_member_string(&o, "command", c->command, sizeof(c->command));
  out_member_string(&o, "correlationId", c->correlation_id,
                    sizeof(c->correlation_id));
  out_key(&o, "parameters");
  out_open(&o);
  if (strncmp(c->command, "setExtDO", sizeof(c->command)) == 0) {
    assert_ext_do(&c->parameters);
    out_member_int(&o, "resourceId", c->parameters.resource_id);
    out_member_int(&o, "output", c->parameters.output);
    out_member_int(&o, "status", c->parameters.status);
  }
  out_close(&o);
  out_close(&o);
  return out_finish(&o);
}

int bm_msg_encode_response(const struct bm_response *r, char *buf, size_t cap)
{
  struct msg_out o = {.buf = buf, .cap = cap};
  const char *result = bm_result_name(r->result);

  assert(buf != NULL || cap == 0);
  assert(result != NULL);
  assert(r->correlation_id[0] != '\0');

  out_open(&o);
  out_member_string(&o, "messageType", "commandResponse", BM_MSG_STR_SIZE);
  out_member_string(&o, "correlationId", r->correlation_id,
                    sizeof(r->correlation_id));
  out_member_string(&o, "result", result ? result : "", BM_MSG_STR_SIZE);
  out_member_string(&o, "reason", r->reason, sizeof(r->reason));
  if (r->has_data) {
    out_key(&o, "data");
    out_open(&o);
    if (r->data_command[0] != '\0')
      out_member_string(&o, "command", r->data_command,
                        sizeof(r->data_command));
    if (r->has_resource_id) {
      assert(r->resource_id >= 0 && r->resource_id <= BM_MSG_MAX_SAFE_INT);
      out_member_int(&o, "resourceId", r->resource_id);
    }
    if (r->has_user_id) {
      assert(r->user_id >= 0 && r->user_id <= BM_MSG_MAX_SAFE_INT);
      out_member_int(&o, "userId", r->user_id);
    }
    if (r->brand[0] != '\0')
      out_member_string(&o, "brand", r->brand, sizeof(r->brand));
    if (r->model[0] != '\0')
      out_member_string(&o, "model", r->model, sizeof(r->model));
    if (r->network_id[0] != '\0')
      out_member_string(&o, "networkId", r->network_id,
                        sizeof(r->network_id));
    out_close(&o);
  }
  out_close(&o);
  return out_finish(&o);
}

int bm_msg_encode_notification(const struct bm_notification *n, char *buf,
                               size_t cap)
{
  struct msg_out o = {.buf = buf, .cap = cap};

  assert(buf != NULL || cap == 0);
  assert(n->has_state == (strncmp(n->notification_type, "extDOStateChanged",
                                  sizeof(n->notification_type)) == 0));
  assert(!n->has_correlation_id || n->correlation_id[0] != '\0');

  out_open(&o);
  out_member_string(&o, "messageType", "notification", BM_MSG_STR_SIZE);
  out_member_string(&o, "appId", n->app_id, sizeof(n->app_id));
  if (n->has_correlation_id)
    out_member_string(&o, "correlationId", n->correlation_id,
                      sizeof(n->correlation_id));
  if (n->command[0] != '\0')
    out_member_string(&o, "command", n->command, sizeof(n->command));
  out_member_string(&o, "notificationType", n->notification_type,
                    sizeof(n->notification_type));
  if (n->user_name[0] != '\0')
    out_member_string(&o, "userName", n->user_name, sizeof(n->user_name));
  if (n->has_user_id) {
    assert(n->user_id >= 0 && n->user_id <= BM_MSG_MAX_SAFE_INT);
    out_member_int(&o, "userId", n->user_id);
  }
  if (n->has_state) {
    assert_ext_do(&n->state);
    out_key(&o, "parameters");
    out_open(&o);
    out_member_int(&o, "resourceId", n->state.resource_id);
    if (n->brand[0] != '\0')
      out_member_string(&o, "brand", n->brand, sizeof(n->brand));
    if (n->model[0] != '\0')
      out_member_string(&o, "model", n->model, sizeof(n->model));
    if (n->network_id[0] != '\0')
      out_member_string(&o, "networkId", n->network_id,
                        sizeof(n->network_id));
    if (n->has_organization_id) {
      assert(n->organization_id >= 0 &&
             n->organization_id <= BM_MSG_MAX_SAFE_INT);
      out_member_int(&o, "organizationId", n->organization_id);
    }
    out_member_int(&o, "output", n->state.output);
    out_member_int(&o, "status", n->state.status);
    out_close(&o);
  }
  out_close(&o);
  return out_finish(&o);
}
