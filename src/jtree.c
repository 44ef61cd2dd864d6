/*
 * jtree.c - yajl_tree_parse's tree, built in an arena (see jtree.h).
 *
 * The arena hands out 16-byte aligned pieces from the current block: first
 * the buffer inside struct bm_jtree, then heap blocks, each at least twice
 * the last.  The latest piece can grow in place (yajl's state stack and
 * buffers grow by realloc); a free is a no-op, everything goes at
 * bm_jtree_free.  Each piece has a header holding its size, for realloc.
 *
 * The tree's own pieces (nodes, strings, member arrays) come from
 * bm_malloc, so tests can make them fail: the parse then ends with "out of
 * memory".  yajl's parser does not check its allocations, so its pieces
 * fall back to plain malloc, as with yajl_tree_parse.
 *
 * Members are not appended to their object one by one (yajl_tree reallocs
 * both arrays per member): keys and values wait on one pending stack shared
 * by all open containers, and a container's arrays are cut from the arena
 * at its end, at their final size.
 */
#include "jtree.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_parse.h>

#include "alloc.h"

#define ALIGN 16
#define HEADER ALIGN /* a piece's size, kept in front of it */
#define MIN_BLOCK 16384

struct bm_jtree_block {
  struct bm_jtree_block *next;
  size_t cap;
  alignas(max_align_t) unsigned char data[];
};

static size_t round_up(size_t n)
{
  return (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
}

/* A new heap block for at least `need` bytes; from bm_malloc for the
 * tree's pieces (`tree`), else from malloc. */
static bool arena_grow(struct bm_jtree *t, size_t need, bool tree)
{
  size_t cap = t->cap * 2 > MIN_BLOCK ? t->cap * 2 : MIN_BLOCK;
  struct bm_jtree_block *b;

  if (cap < need)
    cap = need;
  if (cap > SIZE_MAX - sizeof(*b))
    return false;
  b = tree ? bm_malloc(sizeof(*b) + cap) : malloc(sizeof(*b) + cap);
  if (b == NULL)
    return false;
  b->next = t->blocks;
  b->cap = cap;
  t->blocks = b;
  t->cur = b->data;
  t->used = 0;
  t->cap = cap;
  t->last = NULL;
  return true;
}

static void *arena_alloc(struct bm_jtree *t, size_t size, bool tree)
{
  size_t need;
  unsigned char *p;

  if (size > SIZE_MAX - HEADER - ALIGN)
    return NULL;
  need = HEADER + round_up(size);
  if (t->cap - t->used < need && !arena_grow(t, need, tree))
    return NULL;
  p = t->cur + t->used + HEADER;
  memcpy(p - HEADER, &size, sizeof(size));
  t->used += need;
  t->last = p;
  return p;
}

static size_t piece_size(const void *p)
{
  size_t size;

  memcpy(&size, (const unsigned char *)p - HEADER, sizeof(size));
  return size;
}

/* ---- yajl's allocator ---------------------------------------------------- */

static void *ya_malloc(void *ctx, size_t size)
{
  return arena_alloc(ctx, size, false);
}

static void *ya_realloc(void *ctx, void *old, size_t size)
{
  struct bm_jtree *t = ctx;
  size_t have;
  void *p;

  if (old == NULL)
    return arena_alloc(t, size, false);
  have = piece_size(old);
  if (old == t->last && size <= SIZE_MAX - HEADER - ALIGN) {
    size_t start = (size_t)((unsigned char *)old - t->cur);
    if (start + round_up(size) <= t->cap) { /* grows in place */
      t->used = start + round_up(size);
      memcpy((unsigned char *)old - HEADER, &size, sizeof(size));
      return old;
    }
  }
  if (size <= have) {
    memcpy((unsigned char *)old - HEADER, &size, sizeof(size));
    return old;
  }
  if ((p = arena_alloc(t, size, false)) != NULL)
    memcpy(p, old, have);
  return p;
}

static void ya_free(void *ctx, void *p)
{
  (void)ctx; /* everything goes at bm_jtree_free */
  (void)p;
}

/* ---- the tree ------------------------------------------------------------ */

static yajl_val node_new(struct bm_jtree *t, yajl_type type)
{
  yajl_val v = arena_alloc(t, sizeof(*v), true);

  if (v == NULL) {
    t->oom = true;
    return NULL;
  }
  memset(v, 0, sizeof(*v));
  v->type = type;
  return v;
}

static char *text_copy(struct bm_jtree *t, const void *s, size_t len)
{
  char *p = len < SIZE_MAX ? arena_alloc(t, len + 1, true) : NULL;

  if (p == NULL) {
    t->oom = true;
    return NULL;
  }
  memcpy(p, s, len);
  p[len] = '\0';
  return p;
}

/* Puts v where the document has it: the root, an array's next element, or
 * the value of the object member whose key came last.  Returns yajl's
 * "continue" (1) or "stop" (0). */
static int add_value(struct bm_jtree *t, yajl_val v)
{
  struct bm_jtree_frame *f;

  if (v == NULL)
    return 0;
  if (t->depth == 0) {
    t->root = v;
    return 1;
  }
  f = &t->frames[t->depth - 1];
  if (t->pn == t->pcap) {
    size_t cap = t->pcap ? 2 * t->pcap : 64;
    const char **keys = arena_alloc(t, cap * sizeof(*keys), true);
    yajl_val *vals = arena_alloc(t, cap * sizeof(*vals), true);

    if (keys == NULL || vals == NULL) {
      t->oom = true;
      return 0;
    }
    if (t->pn) {
      memcpy(keys, t->pkeys, t->pn * sizeof(*keys));
      memcpy(vals, t->pvals, t->pn * sizeof(*vals));
    }
    t->pkeys = keys;
    t->pvals = vals;
    t->pcap = cap;
  }
  t->pkeys[t->pn] = f->key;
  t->pvals[t->pn] = v;
  t->pn++;
  f->key = NULL;
  return 1;
}

/* An integer's text as yajl_parse_integer reads it (yajl_tree uses it, yajl
 * does not export it): ERANGE in errno, and LLONG_MAX or LLONG_MIN by the
 * sign, for anything but [-+]digits whose magnitude fits a long long
 * (LLONG_MIN's does not).  yajl detects the overflow after a signed
 * multiplication that wraps; this checks before it, same outcome. */
static long long parse_integer(const char *s, size_t len)
{
  const char *p = s, *end = s + len;
  long long ret = 0, sign = 1;

  if (p < end && *p == '-') {
    p++;
    sign = -1;
  }
  if (p < end && *p == '+')
    p++;
  for (; p < end; p++) {
    if (*p < '0' || *p > '9' || ret > (LLONG_MAX - (*p - '0')) / 10) {
      errno = ERANGE;
      return sign == 1 ? LLONG_MAX : LLONG_MIN;
    }
    ret = ret * 10 + (*p - '0');
  }
  return sign * ret;
}

static int on_null(void *ctx)
{
  return add_value(ctx, node_new(ctx, yajl_t_null));
}

static int on_boolean(void *ctx, int b)
{
  return add_value(ctx, node_new(ctx, b ? yajl_t_true : yajl_t_false));
}

static int on_number(void *ctx, const char *s, size_t len)
{
  struct bm_jtree *t = ctx;
  yajl_val v = node_new(t, yajl_t_number);
  char *end = NULL;

  if (v == NULL || (v->u.number.r = text_copy(t, s, len)) == NULL)
    return 0;
  errno = 0;
  v->u.number.i = parse_integer(v->u.number.r, len);
  if (errno == 0) {
    /* Digits that fit a long long: strtod would round the same integer
     * the same way (to nearest, as the conversion does), at ten times the
     * cost; only its -0 keeps the sign. */
    v->u.number.flags |= YAJL_NUMBER_INT_VALID | YAJL_NUMBER_DOUBLE_VALID;
    v->u.number.d = (double)v->u.number.i;
    if (v->u.number.i == 0 && s[0] == '-')
      v->u.number.d = -0.0;
    return add_value(t, v);
  }
  errno = 0;
  v->u.number.d = strtod(v->u.number.r, &end);
  if (errno == 0 && end != NULL && *end == '\0')
    v->u.number.flags |= YAJL_NUMBER_DOUBLE_VALID;
  return add_value(t, v);
}

static int on_string(void *ctx, const unsigned char *s, size_t len)
{
  struct bm_jtree *t = ctx;
  yajl_val v = node_new(t, yajl_t_string);

  if (v == NULL || (v->u.string = text_copy(t, s, len)) == NULL)
    return 0;
  return add_value(t, v);
}

static int open_container(struct bm_jtree *t, yajl_type type)
{
  yajl_val v;

  if (t->depth == BM_JTREE_MAX_DEPTH) {
    t->too_deep = true;
    return 0;
  }
  if ((v = node_new(t, type)) == NULL || !add_value(t, v))
    return 0;
  t->frames[t->depth].node = v;
  t->frames[t->depth].start = t->pn;
  t->frames[t->depth].key = NULL;
  t->depth++;
  return 1;
}

static int on_start_map(void *ctx)
{
  return open_container(ctx, yajl_t_object);
}

static int on_start_array(void *ctx)
{
  return open_container(ctx, yajl_t_array);
}

static int on_map_key(void *ctx, const unsigned char *key, size_t len)
{
  struct bm_jtree *t = ctx;
  char *k = text_copy(t, key, len);

  if (k == NULL)
    return 0;
  t->frames[t->depth - 1].key = k;
  return 1;
}

/* A container's end: its members move off the pending stack into arrays
 * of their own. */
static int on_end(void *ctx)
{
  struct bm_jtree *t = ctx;
  struct bm_jtree_frame *f = &t->frames[--t->depth];
  size_t n = t->pn - f->start;
  yajl_val *vals = NULL;

  if (n > 0) {
    if ((vals = arena_alloc(t, n * sizeof(*vals), true)) == NULL) {
      t->oom = true;
      return 0;
    }
    memcpy(vals, t->pvals + f->start, n * sizeof(*vals));
  }
  if (f->node->type == yajl_t_object) {
    const char **keys = NULL;

    if (n > 0) {
      if ((keys = arena_alloc(t, n * sizeof(*keys), true)) == NULL) {
        t->oom = true;
        return 0;
      }
      memcpy(keys, t->pkeys + f->start, n * sizeof(*keys));
    }
    f->node->u.object.keys = keys;
    f->node->u.object.values = vals;
    f->node->u.object.len = n;
  } else {
    f->node->u.array.values = vals;
    f->node->u.array.len = n;
  }
  t->pn = f->start;
  return 1;
}

static const yajl_callbacks callbacks = {
    .yajl_null = on_null,
    .yajl_boolean = on_boolean,
    .yajl_number = on_number,
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_map_key,
    .yajl_end_map = on_end,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_end,
};

yajl_val bm_jtree_parse(struct bm_jtree *t, const char *text, size_t len,
                        char *err, size_t errlen)
{
  yajl_alloc_funcs funcs = {ya_malloc, ya_realloc, ya_free, t};
  yajl_handle h;
  yajl_status status;

  t->cur = t->inline_buf;
  t->used = 0;
  t->cap = sizeof(t->inline_buf);
  t->last = NULL;
  t->blocks = NULL;
  t->oom = t->too_deep = false;
  t->pkeys = NULL;
  t->pvals = NULL;
  t->pn = t->pcap = 0;
  t->depth = 0;
  t->root = NULL;
  if (err && errlen)
    err[0] = '\0';

  if ((h = yajl_alloc(&callbacks, &funcs, t)) == NULL) {
    if (err && errlen)
      snprintf(err, errlen, "out of memory");
    return NULL;
  }
  yajl_config(h, yajl_allow_comments, 1); /* as yajl_tree_parse */
  (void)yajl_parse(h, (const unsigned char *)text, len);
  status = yajl_complete_parse(h);
  if (status == yajl_status_ok) {
    yajl_free(h);
    return t->root;
  }
  if (err && errlen) {
    if (t->oom) {
      snprintf(err, errlen, "out of memory");
    } else if (t->too_deep) {
      snprintf(err, errlen, "nesting deeper than %d levels",
               BM_JTREE_MAX_DEPTH);
    } else {
      unsigned char *e = yajl_get_error(h, 1, (const unsigned char *)text, len);
      snprintf(err, errlen, "%s", e ? (const char *)e : "parse error");
      yajl_free_error(h, e);
    }
  }
  yajl_free(h);
  return NULL;
}

void bm_jtree_free(struct bm_jtree *t)
{
  struct bm_jtree_block *b = t->blocks, *next;

  for (; b != NULL; b = next) {
    next = b->next;
    free(b);
  }
  t->blocks = NULL;
  t->root = NULL;
}
