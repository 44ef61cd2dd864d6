/*
 * conffile_test.c - unit tests of collectd's configuration syntax
 * (src/conffile.h): every construct, every error with the line it names,
 * every hard limit, Include with files, directories, patterns and cycles,
 * and the example configuration of the README, parsed from the README
 * itself so that the two cannot drift apart.
 */
#include "conffile.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "tap.h"

static char err[1024];

static bm_conf_t *parse(const char *text)
{
  err[0] = '\0';
  return bm_conf_parse(text, strlen(text), "t.conf", err, sizeof(err));
}

/* The n-th child of it whose key is `key` (case-insensitive), or NULL. */
static const struct bm_conf_item *child(const struct bm_conf_item *it,
                                        const char *key, int n)
{
  for (size_t i = 0; it && i < it->children_num; i++)
    if (strcasecmp(it->children[i].key, key) == 0 && n-- == 0)
      return &it->children[i];
  return NULL;
}

static const char *str_value(const struct bm_conf_item *it, size_t i)
{
  if (!it || i >= it->values_num || it->values[i].type != BM_CONF_STRING)
    return NULL;
  return it->values[i].string;
}

static double num_value(const struct bm_conf_item *it, size_t i)
{
  if (!it || i >= it->values_num || it->values[i].type != BM_CONF_NUMBER)
    return -12345.678;
  return it->values[i].number;
}

static int bool_value(const struct bm_conf_item *it, size_t i)
{
  if (!it || i >= it->values_num || it->values[i].type != BM_CONF_BOOLEAN)
    return -1;
  return it->values[i].boolean;
}

/* Expects `text` to fail with exactly `want` as the error. */
static void parse_fails(const char *text, const char *want, const char *what)
{
  bm_conf_t *c = parse(text);
  ok(c == NULL, "%s: refused", what);
  is_str(err, want, "%s: error names the line", what);
  bm_conf_free(c);
}

/* ---- constructs -------------------------------------------------------- */

static void test_values(void)
{
  bm_conf_t *c = parse(
      "Str \"hello world\"\n"
      "Int 1883\n"
      "Neg -5\n"
      "Plus +7\n"
      "Float 0.25\n"
      "Dot .5\n"
      "Exp -1.5e+3\n"
      "Hex 0x1F\n"
      "Oct 010\n"
      "Bools true false yes no on off\n"
      "NotBool True OFF\n"
      "Bare foo_Bar1 123abc 1e5\n"
      "Ip 127.0.0.1 10.0.0.1:1883\n"
      "Ip6 ::1 fe80::1:2 [::1]:8883 [2001:db8::1]\n"
      "Mixed \"a\" 1 true b\n");
  const struct bm_conf_item *r = c ? bm_conf_root(c) : NULL;
  const struct bm_conf_item *it;

  ok(c != NULL, "values: parsed (%s)", err);
  if (!c)
    return;
  is_int(r->children_num, 15, "15 top-level items");
  is_str(r->key, "", "the root's key is empty");
  is_str(str_value(child(r, "Str", 0), 0), "hello world", "quoted string");
  is_int(num_value(child(r, "Int", 0), 0), 1883, "integer");
  is_int(num_value(child(r, "Neg", 0), 0), -5, "negative integer");
  is_int(num_value(child(r, "Plus", 0), 0), 7, "integer with +");
  ok(num_value(child(r, "Float", 0), 0) == 0.25, "float");
  ok(num_value(child(r, "Dot", 0), 0) == 0.5, "float without integer part");
  ok(num_value(child(r, "Exp", 0), 0) == -1500, "float with exponent");
  is_int(num_value(child(r, "Hex", 0), 0), 31, "hex number");
  is_int(num_value(child(r, "Oct", 0), 0), 10,
         "a leading 0 is decimal (strtod, as collectd)");
  it = child(r, "Bools", 0);
  is_int(it ? it->values_num : 0, 6, "six booleans");
  for (size_t i = 0; i < 6; i++)
    is_int(bool_value(it, i), i % 2 == 0, "boolean %zu", i);
  is_str(str_value(child(r, "NotBool", 0), 0), "True",
         "True is a string (collectd's booleans are lower case)");
  is_str(str_value(child(r, "NotBool", 0), 1), "OFF", "OFF is a string");
  it = child(r, "Bare", 0);
  is_str(str_value(it, 0), "foo_Bar1", "unquoted string");
  is_str(str_value(it, 1), "123abc", "digits then letters: a string");
  is_str(str_value(it, 2), "1e5", "1e5 is a string (collectd's exponent "
                                  "needs a sign)");
  is_str(str_value(child(r, "Ip", 0), 0), "127.0.0.1", "IPv4 address");
  is_str(str_value(child(r, "Ip", 0), 1), "10.0.0.1:1883", "IPv4 with port");
  it = child(r, "Ip6", 0);
  is_str(str_value(it, 0), "::1", "IPv6 ::1");
  is_str(str_value(it, 1), "fe80::1:2", "IPv6 address");
  is_str(str_value(it, 2), "[::1]:8883", "IPv6 in brackets with a port");
  is_str(str_value(it, 3), "[2001:db8::1]", "IPv6 in brackets");
  it = child(r, "Mixed", 0);
  is_int(it ? it->values_num : 0, 4, "mixed values");
  is_int(it ? it->values[0].type : 0, BM_CONF_STRING, "mixed: string");
  is_int(it ? it->values[1].type : 0, BM_CONF_NUMBER, "mixed: number");
  is_int(it ? it->values[2].type : 0, BM_CONF_BOOLEAN, "mixed: boolean");
  is_int(it ? it->values[3].type : 0, BM_CONF_STRING, "mixed: bare string");
  is_int(child(r, "Mixed", 0)->line, 15, "the item knows its line");
  is_str(child(r, "Mixed", 0)->file, "t.conf", "the item knows its file");
  ok(!child(r, "Mixed", 0)->is_block, "an option is no block");
  is_str(bm_conf_type_name(BM_CONF_NUMBER), "number", "type names");
  is_str(bm_conf_type_name(0), "?", "type name of a bad value");
  bm_conf_free(c);
}

static void test_strings(void)
{
  bm_conf_t *c = parse("A \"q\\\"uote\" \"back\\\\slash\" \"\\n\\t\\x\"\n"
                       "B \"has # hash\" # a comment\n"
                       "C \"two\nlines\"\n"
                       "D \"contin\\\n     ued\"\n"
                       "E \"\"\n"
                       "F \"<tag> and / and \\\\\"\n"
                       "G \"caf\xc3\xa9\"\n");
  const struct bm_conf_item *r = c ? bm_conf_root(c) : NULL;

  ok(c != NULL, "strings: parsed (%s)", err);
  if (!c)
    return;
  is_str(str_value(child(r, "A", 0), 0), "q\"uote", "\\\" is a quote");
  is_str(str_value(child(r, "A", 0), 1), "back\\slash", "\\\\ is a backslash");
  is_str(str_value(child(r, "A", 0), 2), "ntx",
         "other escapes keep the character alone, as in collectd");
  is_str(str_value(child(r, "B", 0), 0), "has # hash", "# inside quotes");
  is_int(child(r, "B", 0)->values_num, 1, "a trailing comment is no value");
  is_str(str_value(child(r, "C", 0), 0), "two\nlines",
         "a raw line break in quotes is kept");
  is_str(str_value(child(r, "D", 0), 0), "continued",
         "backslash-newline continues a string without leading blanks");
  is_int(child(r, "D", 0)->line, 5, "line counting after a multi-line string");
  is_int(child(r, "E", 0)->line, 7, "line counting after a continued string");
  is_str(str_value(child(r, "E", 0), 0), "", "empty string");
  is_str(str_value(child(r, "F", 0), 0), "<tag> and / and \\",
         "special characters inside quotes");
  is_str(str_value(child(r, "G", 0), 0), "caf\xc3\xa9", "UTF-8 inside quotes");
  bm_conf_free(c);
}

static void test_blocks(void)
{
  bm_conf_t *c = parse("# header comment\n"
                       "\n"
                       "LoadPlugin bimetri\n"
                       "<Plugin bimetri>\n"
                       "  <Gateway \"plant1\">   # trailing comment\n"
                       "    Host \"127.0.0.1\"\n"
                       "    <Relay \"pump\">\n"
                       "      ResourceId 101\n"
                       "    </Relay>\n"
                       "    < Relay \"fan\" >\n"
                       "    </ Relay >\n"
                       "  </Gateway>\n"
                       "  <Empty>\n"
                       "  </Empty>\n"
                       "</Plugin>\n"
                       "After 1");
  const struct bm_conf_item *r = c ? bm_conf_root(c) : NULL;
  const struct bm_conf_item *p, *g, *relay;

  ok(c != NULL, "blocks: parsed (%s)", err);
  if (!c)
    return;
  is_int(r->children_num, 3, "three top-level items");
  p = child(r, "plugin", 0);
  ok(p && p->is_block, "<Plugin> is a block");
  is_str(str_value(p, 0), "bimetri", "its value");
  is_int(p ? p->line : 0, 4, "its line");
  is_int(p ? p->children_num : 0, 2, "Gateway and Empty inside");
  g = child(p, "Gateway", 0);
  is_str(str_value(g, 0), "plant1", "gateway name");
  is_str(str_value(child(g, "Host", 0), 0), "127.0.0.1", "option in a block");
  relay = child(g, "Relay", 0);
  is_int(num_value(child(relay, "ResourceId", 0), 0), 101, "nested block");
  is_int(relay ? relay->line : 0, 7, "nested block line");
  relay = child(g, "Relay", 1);
  is_str(str_value(relay, 0), "fan", "blanks inside the tags");
  is_int(relay ? relay->children_num : 1, 0, "a block without children");
  g = child(p, "Empty", 0);
  ok(g && g->is_block && g->values_num == 0 && g->children_num == 0,
     "a block without values or children is kept");
  is_int(num_value(child(r, "After", 0), 0), 1,
         "the last line needs no line break");
  is_str(child(r, "After", 0)->key, "After", "keys keep their case");
  bm_conf_free(c);
}

static void test_continuations(void)
{
  bm_conf_t *c = parse("Long 1 \\\n   2 \\\r\n 3\r\n"
                       "<Block \\\n \"x\">\r\n"
                       "</Block>\r\n"
                       "Last \"crlf\"\r\n");
  const struct bm_conf_item *r = c ? bm_conf_root(c) : NULL;

  ok(c != NULL, "continuations: parsed (%s)", err);
  if (!c)
    return;
  is_int(child(r, "Long", 0)->values_num, 3, "a continued option");
  is_int(num_value(child(r, "Long", 0), 2), 3, "its last value");
  is_str(str_value(child(r, "Block", 0), 0), "x", "a continued start tag");
  is_int(child(r, "Block", 0)->line, 4, "line of the continued block");
  is_int(child(r, "Last", 0)->line, 7, "CRLF lines are counted");
  is_str(str_value(child(r, "Last", 0), 0), "crlf", "CRLF is no value");
  bm_conf_free(c);
}

static void test_empty(void)
{
  bm_conf_t *c = parse("");
  ok(c && bm_conf_root(c)->children_num == 0, "an empty text is no error");
  bm_conf_free(c);
  c = parse("\n  \n# only a comment\n\t\n");
  ok(c && bm_conf_root(c)->children_num == 0, "blank and comment lines");
  bm_conf_free(c);
  c = bm_conf_parse(NULL, 0, NULL, err, sizeof(err));
  ok(c && bm_conf_root(c)->children_num == 0, "NULL text, NULL name");
  bm_conf_free(c);
  bm_conf_free(NULL);
}

/* Errors must not crash without an error buffer. */
static void pass_null_err_impl(void)
{
  bm_conf_t *c = bm_conf_parse("A", 1, "x", NULL, 0);
  ok(c == NULL, "an error without an error buffer");
}

/* ---- errors ------------------------------------------------------------ */

static void test_errors(void)
{
  char nul[] = "A 1\nB \"x\0y\"\n";

  parse_fails("A 1\nB \"open\n\nC 2\n",
              "t.conf:5: unterminated string (opened on line 2)",
              "unterminated string");
  parse_fails("A \"x\\", "t.conf:1: unterminated string (opened on line 1)",
              "unterminated string ending in a backslash");
  parse_fails("<Plugin x>\n  A 1\n", "t.conf:3: <Plugin> opened on line 1 is "
                                      "not closed",
              "unclosed block");
  parse_fails("<Plugin x>\n<Gateway y>\n</Plugin>\n",
              "t.conf:3: </Plugin> closes <Gateway> opened on line 2",
              "mismatched end tag");
  parse_fails("<Plugin x>\n</plugin>\n",
              "t.conf:2: </plugin> closes <Plugin> opened on line 1",
              "end tags are case-sensitive, as in collectd");
  parse_fails("A 1\n</Plugin>\n", "t.conf:2: </Plugin> without an open block",
              "end tag without a block");
  parse_fails("A 1\nHost\n", "t.conf:2: option \"Host\" has no value",
              "option without a value");
  parse_fails("A 1\n\n  Host # comment\n",
              "t.conf:3: option \"Host\" has no value",
              "option with only a comment");
  parse_fails("a.b 1\n", "t.conf:1: \"a.b\" is no valid key (letters, digits "
                         "and '_')",
              "invalid key");
  parse_fails("true 1\n", "t.conf:1: \"true\" is no valid key (letters, "
                          "digits and '_')",
              "a boolean is no key");
  parse_fails("123 1\n", "t.conf:1: \"123\" is no valid key (letters, digits "
                         "and '_')",
              "a number is no key");
  parse_fails("A 1\nB 1.5e3\n",
              "t.conf:2: unexpected \"1.5e3\": not a number, a boolean or an "
              "unquoted string (quote it)",
              "a word collectd would split");
  parse_fails("A /etc/x\n", "t.conf:1: unexpected '/' in option \"A\"",
              "an unquoted path");
  parse_fails("A 1 \\ 2\n", "t.conf:1: a backslash outside quotes must end the "
                            "line (a line continuation)",
              "stray backslash");
  parse_fails(
      "A 1\n\nB \x01\n",
      "t.conf:3: unexpected byte 0x01 (quote strings that contain it)",
      "control character");
  parse_fails("A 1\rB 2\n",
              "t.conf:1: unexpected byte 0x0d (quote strings that contain it)",
              "a bare carriage return");
  parse_fails("A caf\xc3\xa9\n",
              "t.conf:1: unexpected byte 0xc3 (quote strings that contain it)",
              "non-ASCII outside quotes");
  {
    bm_conf_t *c = bm_conf_parse(nul, sizeof(nul) - 1, "t.conf", err,
                                 sizeof(err));
    ok(c == NULL, "NUL byte: refused");
    is_str(err, "t.conf:2: NUL byte", "NUL byte: error names the line");
    bm_conf_free(c);
  }
  parse_fails("<Plugin x> A 1\n</Plugin>\n",
              "t.conf:1: unexpected word after a block's start tag: it must "
              "end the line",
              "text after a start tag");
  parse_fails("<Plugin x>\n</Plugin> x\n",
              "t.conf:2: unexpected word after </Plugin>: it must end the "
              "line",
              "text after an end tag");
  parse_fails("<Plugin x\n</Plugin>\n",
              "t.conf:1: expected a value or '>' in <Plugin>, got end of line",
              "start tag without '>'");
  parse_fails("<Plugin x>\n</Plugin\n",
              "t.conf:2: expected '>' to end </Plugin", "end tag without '>'");
  parse_fails("< >\n", "t.conf:1: expected a key after '<', got '>'",
              "start tag without a key");
  parse_fails("<Plugin>\n</ \"x\">\n", "t.conf:2: expected a key after \"</\"",
              "end tag without a key");
  parse_fails("\"Key\" 1\n", "t.conf:1: unexpected string at the start of a "
                             "line",
              "a quoted key");
  parse_fails("> 1\n", "t.conf:1: unexpected '>' at the start of a line",
              "a stray '>'");
  parse_fails("A 1 >\n", "t.conf:1: unexpected '>' in option \"A\"",
              "'>' in an option");
  parse_fails("A 1\nB 1.0e+999\n", "t.conf:2: number \"1.0e+999\" is out of "
                                   "range",
              "number out of range");
  parse_fails("A 00000000000000000000000000000000000000000000000000000000000000"
              "001\n",
              "t.conf:1: number \"0000000000000000000000000000000000000000..."
              "\" is too long",
              "number too long");
  pass_null_err_impl();
}

/* ---- limits ------------------------------------------------------------ */

/* A growing text for the limit tests. */
struct text {
  char *s;
  size_t len, cap;
};

static void text_add(struct text *t, const char *s)
{
  size_t n = strlen(s);
  if (t->len + n + 1 > t->cap) {
    t->cap = (t->len + n + 1) * 2;
    t->s = realloc(t->s, t->cap);
    if (!t->s)
      abort();
  }
  memcpy(t->s + t->len, s, n + 1);
  t->len += n;
}

static void test_limits(void)
{
  struct text t = {0};
  bm_conf_t *c;
  char line[64];
  char *big;

  /* Depth: 16 nested blocks parse, 17 do not. */
  for (int i = 0; i < BM_CONF_MAX_DEPTH; i++)
    text_add(&t, "<B>\n");
  for (int i = 0; i < BM_CONF_MAX_DEPTH; i++)
    text_add(&t, "</B>\n");
  c = parse(t.s);
  ok(c != NULL, "%d nested blocks parse (%s)", BM_CONF_MAX_DEPTH, err);
  bm_conf_free(c);
  t.len = 0;
  for (int i = 0; i <= BM_CONF_MAX_DEPTH; i++)
    text_add(&t, "<B>\n");
  parse_fails(t.s, "t.conf:17: blocks nested deeper than 16 levels",
              "too deep");

  /* Items. */
  t.len = 0;
  for (int i = 0; i < BM_CONF_MAX_ITEMS; i++)
    text_add(&t, "A 1\n");
  c = parse(t.s);
  ok(c && bm_conf_root(c)->children_num == BM_CONF_MAX_ITEMS,
     "%d items parse", BM_CONF_MAX_ITEMS);
  bm_conf_free(c);
  text_add(&t, "A 1\n");
  snprintf(line, sizeof(line), "t.conf:%d: more than %d items",
           BM_CONF_MAX_ITEMS + 1, BM_CONF_MAX_ITEMS);
  parse_fails(t.s, line, "too many items");

  /* Values. */
  t.len = 0;
  text_add(&t, "A");
  for (int i = 0; i < BM_CONF_MAX_VALUES; i++)
    text_add(&t, " 1");
  c = parse(t.s);
  ok(c && bm_conf_root(c)->children[0].values_num == BM_CONF_MAX_VALUES,
     "%d values parse", BM_CONF_MAX_VALUES);
  bm_conf_free(c);
  text_add(&t, " 1");
  parse_fails(t.s, "t.conf:1: more than 64 values for \"A\"",
              "too many values");

  /* String length, quoted and unquoted. */
  t.len = 0;
  text_add(&t, "\n\nA \"");
  for (int i = 0; i < BM_CONF_MAX_STRING; i++)
    text_add(&t, "x");
  text_add(&t, "\"");
  c = parse(t.s);
  ok(c && strlen(bm_conf_root(c)->children[0].values[0].string) ==
              BM_CONF_MAX_STRING,
     "a string of %d bytes parses", BM_CONF_MAX_STRING);
  bm_conf_free(c);
  t.s[t.len - 1] = 'x';
  text_add(&t, "\"");
  parse_fails(t.s, "t.conf:3: string longer than 8191 bytes",
              "string too long");
  t.len = 0;
  text_add(&t, "A ");
  for (int i = 0; i <= BM_CONF_MAX_STRING; i++)
    text_add(&t, "x");
  parse_fails(t.s, "t.conf:1: string longer than 8191 bytes",
              "unquoted string too long");

  /* Key length. */
  t.len = 0;
  for (int i = 0; i < BM_CONF_MAX_KEY; i++)
    text_add(&t, "K");
  text_add(&t, " 1\n");
  c = parse(t.s);
  ok(c != NULL, "a key of %d bytes parses", BM_CONF_MAX_KEY);
  bm_conf_free(c);
  t.len = 0;
  for (int i = 0; i <= BM_CONF_MAX_KEY; i++)
    text_add(&t, "K");
  text_add(&t, " 1\n");
  parse_fails(t.s, "t.conf:1: key longer than 63 bytes", "key too long");
  free(t.s);

  /* Size. */
  big = malloc(BM_CONF_MAX_FILE_SIZE + 1);
  if (!big)
    abort();
  memset(big, '\n', BM_CONF_MAX_FILE_SIZE + 1);
  c = bm_conf_parse(big, BM_CONF_MAX_FILE_SIZE, "t.conf", err, sizeof(err));
  ok(c != NULL, "%d bytes parse", BM_CONF_MAX_FILE_SIZE);
  bm_conf_free(c);
  c = bm_conf_parse(big, BM_CONF_MAX_FILE_SIZE + 1, "t.conf", err,
                    sizeof(err));
  ok(c == NULL, "one byte more is refused");
  is_str(err, "t.conf:1: larger than 1048576 bytes", "size error");
  bm_conf_free(c);
  free(big);
}

/* ---- the README's example ---------------------------------------------- */

/* Extracts the indented example from "    LoadPlugin bimetri" to
 * "    </Plugin>" out of the README, without its 4-space indent. */
static char *readme_example(void)
{
  const char *top = getenv("top_srcdir");
  char path[4096], line[1024];
  struct text t = {0};
  bool in = false;
  FILE *f;

  snprintf(path, sizeof(path), "%s/README", top ? top : ".");
  if (!(f = fopen(path, "r")))
    return NULL;
  while (fgets(line, sizeof(line), f)) {
    if (!in && strcmp(line, "    LoadPlugin bimetri\n") == 0)
      in = true;
    if (!in)
      continue;
    text_add(&t, strncmp(line, "    ", 4) == 0 ? line + 4 : line);
    if (strcmp(line, "    </Plugin>\n") == 0)
      break;
  }
  fclose(f);
  return t.s;
}

static size_t count_items(const struct bm_conf_item *it)
{
  size_t n = 0;
  for (size_t i = 0; i < it->children_num; i++)
    n += 1 + count_items(&it->children[i]);
  return n;
}

/* Lines that start a statement: not blank, not only a comment, no end tag
 * (the example has no continued lines). */
static size_t statement_lines(const char *text)
{
  size_t n = 0;
  for (const char *l = text; *l;) {
    const char *e = strchr(l, '\n'), *p = l;
    while (*p == ' ' || *p == '\t')
      p++;
    if (*p && *p != '\n' && *p != '#' && strncmp(p, "</", 2) != 0)
      n++;
    if (!e)
      break;
    l = e + 1;
  }
  return n;
}

static void test_readme(void)
{
  char *text = readme_example();
  bm_conf_t *c;
  const struct bm_conf_item *r, *p, *g, *relay, *trig;

  ok(text != NULL, "the README has the example configuration");
  if (!text)
    return;
  c = bm_conf_parse(text, strlen(text), "README", err, sizeof(err));
  ok(c != NULL, "the README's example parses (%s)", err);
  if (!c) {
    free(text);
    return;
  }
  r = bm_conf_root(c);
  is_str(str_value(child(r, "LoadPlugin", 0), 0), "bimetri", "LoadPlugin");
  p = child(r, "Plugin", 0);
  g = child(p, "Gateway", 0);
  is_str(str_value(g, 0), "plant1", "Gateway plant1");
  is_str(str_value(child(g, "Host", 0), 0), "127.0.0.1", "Host");
  is_int(num_value(child(g, "Port", 0), 0), 1883, "Port");
  is_str(str_value(child(g, "ClientId", 0), 0), "collectd-plant1", "ClientId");
  is_int(num_value(child(g, "KeepAlive", 0), 0), 30, "KeepAlive");
  is_str(str_value(child(g, "AppName", 0), 0), "flexyWattApp", "AppName");
  is_str(str_value(child(g, "InstanceId", 0), 0), "1", "InstanceId");
  is_int(num_value(child(g, "UserId", 0), 0), 12345, "UserId");
  is_int(num_value(child(g, "OrganizationId", 0), 0), 23456,
         "OrganizationId");
  is_str(str_value(child(g, "TokenFile", 0), 0), "/etc/collectd/plant1.jwt",
         "TokenFile");
  is_int(num_value(child(g, "QoS", 0), 0), 2, "QoS");
  is_int(num_value(child(g, "AckTimeout", 0), 0), 10, "AckTimeout");
  is_int(num_value(child(g, "CommandTimeout", 0), 0), 30, "CommandTimeout");
  is_str(str_value(child(g, "JournalSync", 0), 0), "always",
         "JournalSync always is an unquoted string");
  is_int(num_value(child(g, "JournalSizeLimit", 0), 0), 1048576,
         "JournalSizeLimit");
  relay = child(g, "Relay", 0);
  is_str(str_value(relay, 0), "pump", "Relay pump");
  is_int(num_value(child(relay, "ResourceId", 0), 0), 101, "ResourceId");
  is_int(num_value(child(relay, "Output", 0), 0), 4, "Output");
  trig = child(p, "Trigger", 0);
  is_str(str_value(trig, 0), "overheat", "Trigger overheat");
  is_str(str_value(child(trig, "Relay", 0), 1), "pump",
         "the Trigger's Relay has two values");
  is_int(num_value(child(trig, "OnOkay", 0), 0), 0, "OnOkay");
  ok(p && p->children_num >= 2, "the Gateway, the Trigger and more");
  ok(g && g->children_num >= 23, "the Gateway's options (%zu)",
     g ? g->children_num : 0);
  is_int(count_items(r), statement_lines(text),
         "one item per statement line of the example, none lost");
  bm_conf_free(c);
  free(text);
}

/* ---- files and Include ------------------------------------------------- */

static char dir[] = "/tmp/bm-conffile-test.XXXXXX";

static void write_file(const char *name, const char *text)
{
  char path[4096];
  FILE *f;

  snprintf(path, sizeof(path), "%s/%s", dir, name);
  if (!(f = fopen(path, "w")) || fputs(text, f) < 0 || fclose(f) != 0) {
    perror(path);
    abort();
  }
}

static bm_conf_t *read_conf(const char *name)
{
  char path[4096];

  snprintf(path, sizeof(path), "%s/%s", dir, name);
  err[0] = '\0';
  return bm_conf_read(path, err, sizeof(err));
}

/* Expects reading `name` to fail with an error that, after the test
 * directory's path is removed, equals want. */
static void read_fails(const char *name, const char *want, const char *what)
{
  bm_conf_t *c = read_conf(name);
  char clean[1024];
  size_t dl = strlen(dir), j = 0;

  for (size_t i = 0; err[i] && j < sizeof(clean) - 1;)
    if (strncmp(err + i, dir, dl) == 0) {
      clean[j++] = '@';
      i += dl;
    } else {
      clean[j++] = err[i++];
    }
  clean[j] = '\0';
  ok(c == NULL, "%s: refused", what);
  is_str(clean, want, "%s: the error", what);
  bm_conf_free(c);
}

static void test_include(void)
{
  char path[4096];
  bm_conf_t *c;
  const struct bm_conf_item *r;

  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    abort();
  }
  snprintf(path, sizeof(path), "%s/conf.d", dir);
  mkdir(path, 0700);
  snprintf(path, sizeof(path), "%s/conf.d/sub", dir);
  mkdir(path, 0700);
  {
    char text[4096];
    snprintf(text, sizeof(text),
             "BaseDir \"/var/lib/x\"\n"
             "Include \"%s/one.conf\"\n"
             "<Include \"%s/conf.d\">\n"
             "  Filter \"*.conf\"\n"
             "</Include>\n"
             "Include \"%s/missing-*.conf\"\n"
             "Last 1\n",
             dir, dir, dir);
    write_file("main.conf", text);
  }
  write_file("one.conf", "One 1\n");
  write_file("conf.d/b.conf", "B 2\n<Plugin bimetri>\n  X 1\n</Plugin>\n");
  write_file("conf.d/a.conf", "A 1\n");
  write_file("conf.d/c.txt", "C 3\n");
  write_file("conf.d/.hidden.conf", "Hidden 1\n");
  write_file("conf.d/sub/d.conf", "D 4\n");

  c = read_conf("main.conf");
  ok(c != NULL, "includes: read (%s)", err);
  if (c) {
    r = bm_conf_root(c);
    is_int(r->children_num, 7, "BaseDir, One, A, B, Plugin, D, Last");
    if (r->children_num == 7) {
      is_str(r->children[0].key, "BaseDir", "1: BaseDir");
      is_str(r->children[1].key, "One", "2: the included file");
      is_str(r->children[2].key, "A", "3: the directory, sorted");
      is_str(r->children[3].key, "B", "4: B");
      is_str(r->children[4].key, "Plugin", "5: B's block");
      is_str(r->children[5].key, "D", "6: a subdirectory");
      is_str(r->children[6].key, "Last", "7: after the includes");
      is_int(r->children[4].line, 2, "an included item's line");
      snprintf(path, sizeof(path), "%s/conf.d/b.conf", dir);
      is_str(r->children[4].file, path, "an included item's file");
      is_int(r->children[6].line, 7, "the main file's line");
    }
    ok(!child(r, "C", 0), "the Filter pattern keeps c.txt out");
    ok(!child(r, "Hidden", 0), "dot files are skipped");
  }
  bm_conf_free(c);

  /* Glob in the option form. */
  {
    char text[4096];
    snprintf(text, sizeof(text), "Include \"%s/conf.d/[ab].conf\"\n", dir);
    write_file("glob.conf", text);
  }
  c = read_conf("glob.conf");
  ok(c && bm_conf_root(c)->children_num == 3 &&
         strcmp(bm_conf_root(c)->children[0].key, "A") == 0,
     "wildcards are expanded, matches sorted (%s)", err);
  bm_conf_free(c);

  /* Errors. */
  write_file("self.conf", "Include \"self.conf\"\n");
  if (chdir(dir) != 0)
    abort();
  read_fails("self.conf", "self.conf:1: Include nested more than 8 levels "
                          "deep",
             "an include cycle");
  read_fails("nofile.conf", "cannot open \"@/nofile.conf\": No such file or "
                            "directory",
             "a missing file");
  write_file("twoargs.conf", "A 1\nInclude \"a\" \"b\"\n");
  read_fails("twoargs.conf", "@/twoargs.conf:2: Include needs exactly one "
                             "string argument",
             "Include with two values");
  write_file("badblock.conf", "<Include \"conf.d\">\n  Other 1\n</Include>\n");
  read_fails("badblock.conf", "@/badblock.conf:2: only Filter \"pattern\" is "
                              "allowed in an <Include> block",
             "a bad Include block");
  write_file("syntax.conf", "Include \"bad.conf\"\n");
  write_file("bad.conf", "A 1\nB\n");
  read_fails("syntax.conf", "bad.conf:2: option \"B\" has no value",
             "a syntax error in an included file names that file");
  read_fails("conf.d", "\"@/conf.d\" is not a regular file",
             "a directory as the main file");
  snprintf(path, sizeof(path), "%s/fifo", dir);
  if (mkfifo(path, 0600) == 0)
    read_fails("fifo", "\"@/fifo\" is not a regular file",
               "a FIFO is refused without blocking");
  else
    ok(0, "mkfifo: %s", strerror(errno));

  /* Cleanup. */
  {
    static const char *const files[] = {
        "main.conf",      "one.conf",    "conf.d/b.conf",
        "conf.d/a.conf",  "conf.d/c.txt", "conf.d/.hidden.conf",
        "conf.d/sub/d.conf", "glob.conf", "self.conf",
        "twoargs.conf",   "badblock.conf", "syntax.conf",
        "bad.conf",       "fifo"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
      snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
      unlink(path);
    }
    snprintf(path, sizeof(path), "%s/conf.d/sub", dir);
    rmdir(path);
    snprintf(path, sizeof(path), "%s/conf.d", dir);
    rmdir(path);
    rmdir(dir);
  }
}

int main(void)
{
  test_values();
  test_strings();
  test_blocks();
  test_continuations();
  test_empty();
  test_errors();
  test_limits();
  test_readme();
  test_include();
  return done_testing();
}
