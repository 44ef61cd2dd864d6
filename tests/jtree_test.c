/*
 * jtree_test.c - src/jtree.c against yajl_tree_parse (tests/jtree_compare.h)
 * on the protocol's examples and on texts chosen for their edges: numbers
 * at and past long long, escapes, empty and nested containers, duplicate
 * keys, comments, invalid JSON of several kinds; then what only jtree does:
 * the depth limit, documents larger than the arena's inline buffer, and
 * every allocation of the tree failing in turn (reported, nothing leaked:
 * make check runs this under valgrind).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "jtree.h"

#include "jtree_compare.h"
#include "tap.h"

static void same_as_yajl(const char *text, const char *what)
{
  char why[600];
  int r = jtree_compare(text, strlen(text), why, sizeof(why));

  if (!ok(r == 1, "same as yajl_tree: %s", what))
    diag("%s", r < 0 ? "refused as too deep" : why);
}

static char *read_file(const char *path)
{
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  long len;

  if (f && fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 &&
      fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)len + 1)) &&
      fread(buf, 1, (size_t)len, f) == (size_t)len)
    buf[len] = '\0';
  else {
    free(buf);
    buf = NULL;
  }
  if (f)
    fclose(f);
  return buf;
}

static char *nested(int depth)
{
  char *s = malloc(2 * (size_t)depth + 2);

  for (int i = 0; i < depth; i++) {
    s[i] = '[';
    s[2 * depth - 1 - i] = ']';
  }
  s[2 * depth] = '\0';
  return s;
}

/* [0,1,2,...] of n elements, and an object of n members "k<i>": i. */
static char *big(int n, int object)
{
  size_t cap = (size_t)n * 24 + 4, len = 0;
  char *s = malloc(cap);

  s[len++] = object ? '{' : '[';
  for (int i = 0; i < n; i++)
    len += (size_t)snprintf(s + len, cap - len,
                            object ? "%s\"k%d\":%d" : "%s%d", i ? "," : "",
                            object ? i : i, i);
  s[len++] = object ? '}' : ']';
  s[len] = '\0';
  return s;
}

int main(void)
{
  static const char *const files[] = {
      "command.json",         "notification.json",
      "notification-unsolicited.json", "response-sent.json",
      "response-not-send.json", "response-unauthorized.json"};
  static const char *const texts[] = {
      "{}", "[]", "{\"a\":{}}", "[[],{},[[]]]", "0", "-0", "\"top\"", "true",
      "null", "[true,false,null]",
      "[9223372036854775807,-9223372036854775807]",
      "[9007199254740993,-9007199254740995,18014398509481989,-0]",
      "[9223372036854775808,-9223372036854775808]",
      "[9223372036854775810,92233720368547758070,-92233720368547758079]",
      "[1.5,-1.5e3,1e400,-1e-400,0.0000,1E2,123456789012345678901234567890]",
      "{\"s\":\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\"}",
      "{\"\xc3\xa9t\xc3\xa9\":\"\xe2\x82\xac\"}",
      "{\"a\":1,\"a\":2,\"b\":[1,{\"a\":3,\"a\":4}]}",
      "{\"k\":1 /* comment */, // line\n\"m\":2}",
      " \t\n{ \"spaced\" : [ 1 , 2 ] } \n",
      "{", "}", "[1,]", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "[1 2]",
      "{\"a\":1}}", "{\"a\":1} x", "tru", "nul", "\"unterminated",
      "{\"a\":\"\\x\"}", "[01]", "[-]", "[1.]", "[.5]", "[1e]", "{1:2}",
      "[\"\x01\"]", "'single'", "", " ", "/* only a comment */"};
  char path[512], dir[400], err[256], why[600];
  static struct bm_jtree t;
  yajl_val v;
  char *s;

  snprintf(dir, sizeof(dir), "%s/tests/data",
           getenv("top_srcdir") ? getenv("top_srcdir") : ".");

  for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
    snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
    if (!ok((s = read_file(path)) != NULL, "read %s", path))
      continue;
    same_as_yajl(s, files[i]);
    free(s);
  }
  for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
    same_as_yajl(texts[i], texts[i]);

  /* depth: 64 levels parse, as yajl_tree; 65 are refused by name */
  s = nested(BM_JTREE_MAX_DEPTH);
  same_as_yajl(s, "64 nested arrays");
  free(s);
  s = nested(BM_JTREE_MAX_DEPTH + 1);
  v = bm_jtree_parse(&t, s, strlen(s), err, sizeof(err));
  ok(v == NULL, "65 nested arrays refused");
  is_str(err, "nesting deeper than 64 levels", "the error names the limit");
  bm_jtree_free(&t);
  ok(jtree_compare(s, strlen(s), why, sizeof(why)) == -1,
     "jtree_compare reports too deep, not a difference");
  free(s);

  /* larger than the inline buffer: heap blocks, pending stack regrown */
  s = big(20000, 0);
  same_as_yajl(s, "an array of 20,000 numbers");
  v = bm_jtree_parse(&t, s, strlen(s), err, sizeof(err));
  ok(v && YAJL_IS_ARRAY(v) && v->u.array.len == 20000 &&
         v->u.array.values[19999]->u.number.i == 19999,
     "20,000 elements, the last one 19999");
  bm_jtree_free(&t);
  free(s);
  s = big(5000, 1);
  same_as_yajl(s, "an object of 5,000 members");
  free(s);

  /* a notification fits the inline buffer: no heap block */
  snprintf(path, sizeof(path), "%s/notification.json", dir);
  if ((s = read_file(path)) != NULL) {
    v = bm_jtree_parse(&t, s, strlen(s), err, sizeof(err));
    ok(v != NULL && t.blocks == NULL, "a notification parses in the arena's "
                                      "inline buffer");
    bm_jtree_free(&t);
    free(s);
  }

  /* every allocation of the tree failing in turn */
  s = big(3000, 1);
  {
    int reported = 1, runs = 0;
    for (unsigned long n = 1; n < 100; n++) {
      bm_alloc_fail_at(n);
      v = bm_jtree_parse(&t, s, strlen(s), err, sizeof(err));
      if (!bm_alloc_failed()) {
        bm_alloc_fail_at(0);
        ok(v != NULL && v->u.object.len == 3000,
           "allocation %lu of none failing: parsed", n);
        bm_jtree_free(&t);
        break;
      }
      runs++;
      if (v != NULL || strcmp(err, "out of memory") != 0) {
        reported = 0;
        diag("allocation %lu failed: %s", n, v ? "parsed anyway" : err);
      }
      bm_jtree_free(&t);
    }
    bm_alloc_fail_at(0);
    ok(runs > 0 && reported,
       "each of %d failed allocations ends the parse with \"out of memory\"",
       runs);
  }
  free(s);
  return done_testing();
}
