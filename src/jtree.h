/*
 * jtree.h - a JSON text parsed by yajl into the tree of yajl_tree.h, built
 * in an arena.
 *
 * The nodes, number flags, member order (duplicate keys kept) and error
 * texts are those of yajl_tree_parse with its configuration (comments
 * allowed), so code written for yajl_tree reads the result unchanged; the
 * tests compare the two on every input the message fuzzer makes.  What
 * differs is the memory: yajl_tree_parse makes a malloc per value, key and
 * number text and a realloc per object member, and its parser handle a few
 * more; here all of them come from one arena, a buffer inside struct
 * bm_jtree (on the caller's stack) and, for larger documents, heap blocks,
 * and bm_jtree_free releases them at once.  A gateway notification parses
 * without touching the heap.
 *
 *   struct bm_jtree t;
 *   bm_jtree_init(&t);           (if bm_jtree_free may come first)
 *   yajl_val top = bm_jtree_parse(&t, text, len, err, sizeof(err));
 *   ...                          (top == NULL: err says why)
 *   bm_jtree_free(&t);           (always, also after a failed parse)
 */
#ifndef BM_JTREE_H
#define BM_JTREE_H

#include <stdalign.h>
#include <stdbool.h>
#include <stddef.h>

#include <yajl/yajl_tree.h>

#define BM_JTREE_MAX_DEPTH 64     /* nesting of objects and arrays */
#define BM_JTREE_INLINE_SIZE 8192 /* arena bytes inside the struct */

struct bm_jtree_block; /* a heap block of the arena */

/* A container being built: its node, and where its members start on the
 * pending stack. */
struct bm_jtree_frame {
  yajl_val node;
  size_t start;
  const char *key; /* an object's key awaiting its value */
};

struct bm_jtree {
  /* the arena: the current block (inline or heap) and its fill */
  unsigned char *cur;
  size_t used, cap;
  unsigned char *last; /* the latest allocation, which can grow in place */
  struct bm_jtree_block *blocks;
  bool oom; /* an allocation for the tree failed */
  bool too_deep;
  /* members of the open containers, in document order */
  const char **pkeys;
  yajl_val *pvals;
  size_t pn, pcap;
  struct bm_jtree_frame frames[BM_JTREE_MAX_DEPTH];
  size_t depth;
  yajl_val root;
  alignas(max_align_t) unsigned char inline_buf[BM_JTREE_INLINE_SIZE];
};

/* Makes bm_jtree_free safe before any bm_jtree_parse on t. */
static inline void bm_jtree_init(struct bm_jtree *t)
{
  t->blocks = NULL;
  t->root = NULL;
}

/* Parses len bytes of text (no NUL needed) into a tree owned by t.
 * Returns its root, or NULL with an error in err (errlen bytes, may be
 * NULL/0): yajl's own text for invalid JSON (as yajl_tree_parse words it,
 * which quotes the input after its first line), "out of memory", or
 * "nesting deeper than 64 levels". */
yajl_val bm_jtree_parse(struct bm_jtree *t, const char *text, size_t len,
                        char *err, size_t errlen);

/* Frees what the last bm_jtree_parse on t allocated. */
void bm_jtree_free(struct bm_jtree *t);

#endif
