/*
 * jtree_compare.h - checks that src/jtree.c parses a text exactly as
 * yajl_tree_parse does: both accept or both refuse it, with the same error
 * text, into trees of the same shape (types, member order, keys, strings,
 * number texts, flags and values).  Used by tests/jtree_test.c and by the
 * message fuzzer, on every input it makes.
 */
#ifndef BM_JTREE_COMPARE_H
#define BM_JTREE_COMPARE_H

#include <stdio.h>
#include <string.h>

#include <yajl/yajl_tree.h>

#include "jtree.h"

/* Compares a and b; on a difference writes where to why (size whylen) and
 * returns 0. */
static int jtree_same(yajl_val a, yajl_val b, char *why, size_t whylen)
{
  size_t n;

  if (a == NULL || b == NULL || a->type != b->type) {
    snprintf(why, whylen, "type %d vs %d", a ? (int)a->type : -1,
             b ? (int)b->type : -1);
    return 0;
  }
  switch (a->type) {
  case yajl_t_string:
    if (strcmp(a->u.string, b->u.string) != 0) {
      snprintf(why, whylen, "string \"%s\" vs \"%s\"", a->u.string,
               b->u.string);
      return 0;
    }
    return 1;
  case yajl_t_number:
    if (strcmp(a->u.number.r, b->u.number.r) != 0 ||
        a->u.number.flags != b->u.number.flags ||
        a->u.number.i != b->u.number.i ||
        ((a->u.number.flags & YAJL_NUMBER_DOUBLE_VALID) &&
         memcmp(&a->u.number.d, &b->u.number.d, sizeof(double)) != 0)) {
      snprintf(why, whylen, "number %s (flags %u, %lld) vs %s (flags %u, %lld)",
               a->u.number.r, a->u.number.flags, a->u.number.i,
               b->u.number.r, b->u.number.flags, b->u.number.i);
      return 0;
    }
    return 1;
  case yajl_t_object:
    if ((n = a->u.object.len) != b->u.object.len) {
      snprintf(why, whylen, "object of %zu vs %zu members", n,
               b->u.object.len);
      return 0;
    }
    for (size_t i = 0; i < n; i++) {
      if (strcmp(a->u.object.keys[i], b->u.object.keys[i]) != 0) {
        snprintf(why, whylen, "key \"%s\" vs \"%s\"", a->u.object.keys[i],
                 b->u.object.keys[i]);
        return 0;
      }
      if (!jtree_same(a->u.object.values[i], b->u.object.values[i], why,
                      whylen))
        return 0;
    }
    return 1;
  case yajl_t_array:
    if ((n = a->u.array.len) != b->u.array.len) {
      snprintf(why, whylen, "array of %zu vs %zu elements", n,
               b->u.array.len);
      return 0;
    }
    for (size_t i = 0; i < n; i++)
      if (!jtree_same(a->u.array.values[i], b->u.array.values[i], why,
                      whylen))
        return 0;
    return 1;
  default:
    return 1; /* true, false, null */
  }
}

/* Parses text (len bytes, no NUL in them; text[len] must be NUL) both
 * ways.  Returns 1 when the two agree; 0 with the difference in why; -1
 * when the text nests deeper than jtree's limit, where yajl_tree goes on
 * (jtree then must say so, else 0). */
static int jtree_compare(const char *text, size_t len, char *why,
                         size_t whylen)
{
  static struct bm_jtree t; /* 10 KB: not on a fuzzer's stack */
  char e1[512], e2[512];
  yajl_val a, b;
  int same;

  why[0] = '\0';
  a = bm_jtree_parse(&t, text, len, e1, sizeof(e1));
  if (a == NULL && strncmp(e1, "nesting deeper than", 19) == 0) {
    bm_jtree_free(&t);
    return -1;
  }
  b = yajl_tree_parse(text, e2, sizeof(e2));
  if (a == NULL || b == NULL) {
    same = a == NULL && b == NULL && strcmp(e1, e2) == 0;
    if (!same)
      snprintf(why, whylen, "jtree %s (%s), yajl_tree %s (%s)",
               a ? "parsed" : "refused", a ? "" : e1,
               b ? "parsed" : "refused", b ? "" : e2);
  } else {
    same = jtree_same(a, b, why, whylen);
  }
  yajl_tree_free(b);
  bm_jtree_free(&t);
  return same;
}

#endif
