/*
 * conffile.c - see conffile.h.
 *
 * A hand-written scanner and a line-oriented parser: collectd's grammar is
 * one statement per (continued) line, so the parser reads the tokens of a
 * line and decides what the line is from its first tokens.  Open blocks are
 * a stack of pointers; a block's children array only grows while the block
 * is the innermost open one, so no pointer on the stack is ever moved by a
 * realloc.
 */
#include "conffile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <glob.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

struct bm_conf {
  struct bm_conf_item root;
  char **files; /* names items point to, owned here */
  size_t files_num;
  size_t items; /* items created so far, for BM_CONF_MAX_ITEMS */
};

/* ---- tree storage ------------------------------------------------------ */

static void item_release(struct bm_conf_item *it)
{
  free(it->key);
  for (size_t i = 0; i < it->values_num; i++)
    if (it->values[i].type == BM_CONF_STRING)
      free(it->values[i].string);
  free(it->values);
  for (size_t i = 0; i < it->children_num; i++)
    item_release(&it->children[i]);
  free(it->children);
  memset(it, 0, sizeof(*it));
}

void bm_conf_free(bm_conf_t *conf)
{
  if (!conf)
    return;
  item_release(&conf->root);
  for (size_t i = 0; i < conf->files_num; i++)
    free(conf->files[i]);
  free(conf->files);
  free(conf);
}

const struct bm_conf_item *bm_conf_root(const bm_conf_t *conf)
{
  return &conf->root;
}

const char *bm_conf_type_name(enum bm_conf_type type)
{
  switch (type) {
  case BM_CONF_STRING:
    return "string";
  case BM_CONF_NUMBER:
    return "number";
  case BM_CONF_BOOLEAN:
    return "boolean";
  }
  return "?";
}

static bm_conf_t *conf_new(void)
{
  bm_conf_t *conf = calloc(1, sizeof(*conf));

  if (conf && !(conf->root.key = strdup(""))) {
    free(conf);
    return NULL;
  }
  if (conf)
    conf->root.is_block = true;
  return conf;
}

/* Keeps a copy of a file name for the items to point to.  NULL when out of
 * memory. */
static const char *conf_add_file(bm_conf_t *conf, const char *name)
{
  char **grown;
  char *copy = strdup(name);

  if (!copy)
    return NULL;
  if (!(grown = realloc(conf->files, (conf->files_num + 1) * sizeof(*grown)))) {
    free(copy);
    return NULL;
  }
  conf->files = grown;
  conf->files[conf->files_num++] = copy;
  return copy;
}

/* Arrays only grow at their end, so their capacity needs no field: it is
 * the next power of two at or above the count.  Returns the capacity to
 * grow to before element n is appended, or 0 when there is room. */
static size_t grow_to(size_t n)
{
  return n == 0 ? 4 : n >= 4 && (n & (n - 1)) == 0 ? 2 * n : 0;
}

/* Appends a zeroed child to parent; NULL when out of memory. */
static struct bm_conf_item *item_add_child(struct bm_conf_item *parent)
{
  size_t cap = grow_to(parent->children_num);

  if (cap) {
    struct bm_conf_item *grown =
        realloc(parent->children, cap * sizeof(*parent->children));
    if (!grown)
      return NULL;
    parent->children = grown;
  }
  memset(&parent->children[parent->children_num], 0,
         sizeof(*parent->children));
  return &parent->children[parent->children_num++];
}

/* Moves `child` (its contents, not copied) to the end of parent's
 * children.  Returns 0, or -1 when out of memory (child is untouched). */
static int item_move_child(struct bm_conf_item *parent,
                           struct bm_conf_item *child)
{
  struct bm_conf_item *slot = item_add_child(parent);

  if (!slot)
    return -1;
  *slot = *child;
  memset(child, 0, sizeof(*child));
  return 0;
}

/* ---- scanner ----------------------------------------------------------- */

enum tok_kind {
  TOK_EOF,
  TOK_EOL,
  TOK_OPEN,   /* < */
  TOK_CLOSE,  /* > */
  TOK_SLASH,  /* / */
  TOK_STRING, /* "quoted", unquoted into parser.buf */
  TOK_WORD    /* anything else: text, len point into the input */
};

struct token {
  enum tok_kind kind;
  int line;
  const char *text;
  size_t len;
};

struct parser {
  bm_conf_t *conf;
  const char *file; /* owned by conf */
  const char *p, *end;
  int line;
  char buf[BM_CONF_MAX_STRING + 1]; /* the last quoted string, unquoted */
  size_t buf_len;
  struct bm_conf_item *open[BM_CONF_MAX_DEPTH + 1]; /* [0] the container */
  int depth;
  char *err;
  size_t errlen;
};

static int __attribute__((format(printf, 3, 4)))
fail(struct parser *ps, int line, const char *fmt, ...)
{
  va_list ap;
  char msg[512];

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (ps->err && ps->errlen)
    snprintf(ps->err, ps->errlen, "%s:%d: %s", ps->file, line, msg);
  return -1;
}

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

/* The bytes that may form an unquoted word: printable ASCII except blanks
 * and the characters with a meaning of their own. */
static bool is_word_char(char c)
{
  return c > 0x20 && c < 0x7f && !strchr("\"<>/#\\", c);
}

/* Whether p points at a line break (\n or \r\n); its length in *n. */
static bool at_eol(const struct parser *ps, const char *p, size_t *n)
{
  if (p < ps->end && *p == '\n') {
    *n = 1;
    return true;
  }
  if (p + 1 < ps->end && p[0] == '\r' && p[1] == '\n') {
    *n = 2;
    return true;
  }
  return false;
}

/* Scans a quoted string; ps->p is just after the opening quote. */
static int scan_string(struct parser *ps, struct token *t)
{
  size_t n;

  ps->buf_len = 0;
  for (;;) {
    char c;

    if (ps->p >= ps->end)
      return fail(ps, ps->line, "unterminated string (opened on line %d)",
                  t->line);
    c = *ps->p;
    if (c == '"') {
      ps->p++;
      break;
    }
    if (c == '\\') {
      if (at_eol(ps, ps->p + 1, &n)) {
        /* Continued on the next line, without its leading blanks. */
        ps->p += 1 + n;
        ps->line++;
        while (ps->p < ps->end && is_blank(*ps->p))
          ps->p++;
        continue;
      }
      if (ps->p + 1 >= ps->end)
        return fail(ps, ps->line, "unterminated string (opened on line %d)",
                    t->line);
      c = ps->p[1];
      ps->p += 2;
    } else {
      ps->p++;
    }
    if (c == '\n')
      ps->line++;
    if (ps->buf_len == BM_CONF_MAX_STRING)
      return fail(ps, t->line, "string longer than %d bytes",
                  BM_CONF_MAX_STRING);
    ps->buf[ps->buf_len++] = c;
  }
  ps->buf[ps->buf_len] = '\0';
  t->kind = TOK_STRING;
  t->text = ps->buf;
  t->len = ps->buf_len;
  return 0;
}

/* Reads the next token into t.  Returns 0, or -1 with the error set. */
static int next_token(struct parser *ps, struct token *t)
{
  size_t n;

  for (;;) {
    while (ps->p < ps->end && is_blank(*ps->p))
      ps->p++;
    t->line = ps->line;
    if (ps->p >= ps->end) {
      t->kind = TOK_EOF;
      return 0;
    }
    if (*ps->p == '#') {
      while (ps->p < ps->end && *ps->p != '\n' && !at_eol(ps, ps->p, &n))
        ps->p++;
      continue;
    }
    if (*ps->p == '\\') {
      if (!at_eol(ps, ps->p + 1, &n))
        return fail(ps, ps->line, "a backslash outside quotes must end the "
                                  "line (a line continuation)");
      ps->p += 1 + n;
      ps->line++;
      continue;
    }
    break;
  }

  if (at_eol(ps, ps->p, &n)) {
    ps->p += n;
    ps->line++;
    t->kind = TOK_EOL;
    return 0;
  }
  switch (*ps->p) {
  case '<':
    ps->p++;
    t->kind = TOK_OPEN;
    return 0;
  case '>':
    ps->p++;
    t->kind = TOK_CLOSE;
    return 0;
  case '/':
    ps->p++;
    t->kind = TOK_SLASH;
    return 0;
  case '"':
    ps->p++;
    return scan_string(ps, t);
  default:
    break;
  }
  if (!is_word_char(*ps->p))
    return fail(ps, ps->line, "unexpected byte 0x%02x (quote strings that "
                              "contain it)",
                (unsigned)(unsigned char)*ps->p);
  t->kind = TOK_WORD;
  t->text = ps->p;
  while (ps->p < ps->end && is_word_char(*ps->p))
    ps->p++;
  t->len = (size_t)(ps->p - t->text);
  return 0;
}

/* ---- words ------------------------------------------------------------- */

static size_t span(const char *s, size_t len, const char *set)
{
  size_t i = 0;
  while (i < len && strchr(set, s[i]))
    i++;
  return i;
}

#define DIGITS "0123456789"
#define HEXDIGITS "0123456789abcdefABCDEF"
#define IDENT_CHARS                                                            \
  "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"

/* collectd's NUMBER: decimal, float, 0x hex or 0 octal, exactly. */
static bool word_is_number(const char *s, size_t len)
{
  size_t i = 0, n;

  if (len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
    return span(s + 2, len - 2, HEXDIGITS) == len - 2;
  if (i < len && (s[i] == '+' || s[i] == '-'))
    i++;
  n = span(s + i, len - i, DIGITS);
  i += n;
  if (i == len)
    return n > 0;
  if (s[i] != '.')
    return false;
  i++;
  if ((n = span(s + i, len - i, DIGITS)) == 0)
    return false;
  i += n;
  if (i == len)
    return true;
  if ((s[i] != 'e' && s[i] != 'E') || i + 1 >= len ||
      (s[i + 1] != '+' && s[i + 1] != '-'))
    return false;
  i += 2;
  n = span(s + i, len - i, DIGITS);
  return n > 0 && i + n == len;
}

/* 1 for true/yes/on, 0 for false/no/off, -1 for anything else. */
static int word_boolean(const char *s, size_t len)
{
  static const char *const yes[] = {"true", "yes", "on"};
  static const char *const no[] = {"false", "no", "off"};

  for (size_t i = 0; i < 3; i++) {
    if (len == strlen(yes[i]) && memcmp(s, yes[i], len) == 0)
      return 1;
    if (len == strlen(no[i]) && memcmp(s, no[i], len) == 0)
      return 0;
  }
  return -1;
}

/* A decimal number without leading zeros, within [min, max]; n digits. */
static bool decimal_in(const char *s, size_t n, long min, long max)
{
  long v = 0;

  if (n == 0 || n > 5 || (n > 1 && s[0] == '0') || span(s, n, DIGITS) != n)
    return false;
  for (size_t i = 0; i < n; i++)
    v = v * 10 + (s[i] - '0');
  return v >= min && v <= max;
}

/* A port suffix ":1..65535" at s (len bytes), or nothing. */
static bool port_ok(const char *s, size_t len)
{
  return len == 0 || (s[0] == ':' && decimal_in(s + 1, len - 1, 1, 65535));
}

/* collectd's IPV4_ADDR: four bytes without leading zeros, optional port. */
static bool word_is_ipv4(const char *s, size_t len)
{
  size_t i = 0;

  for (int part = 0; part < 4; part++) {
    size_t n = span(s + i, len - i, DIGITS);
    if (!decimal_in(s + i, n, 0, 255))
      return false;
    i += n;
    if (part < 3) {
      if (i >= len || s[i] != '.')
        return false;
      i++;
    }
  }
  return port_ok(s + i, len - i);
}

/* IPv6, approximated: hex digits, ':' and '.', at least two ':', or that
 * in brackets with an optional port. */
static bool word_is_ipv6(const char *s, size_t len)
{
  size_t n, colons = 0;
  const char *close;

  if (len > 0 && s[0] == '[') {
    if (!(close = memchr(s, ']', len)))
      return false;
    return word_is_ipv6(s + 1, (size_t)(close - s) - 1) &&
           port_ok(close + 1, len - (size_t)(close - s) - 1);
  }
  n = span(s, len, HEXDIGITS ":.");
  for (size_t i = 0; i < len; i++)
    colons += s[i] == ':';
  return n == len && colons >= 2;
}

static bool word_is_key(const char *s, size_t len)
{
  return len > 0 && span(s, len, IDENT_CHARS) == len &&
         !word_is_number(s, len) && word_boolean(s, len) < 0;
}

/* ---- parser ------------------------------------------------------------ */

/* Creates an item as the last child of the innermost open block. */
static struct bm_conf_item *new_item(struct parser *ps, const struct token *t)
{
  struct bm_conf_item *it;

  if (ps->conf->items >= BM_CONF_MAX_ITEMS) {
    fail(ps, t->line, "more than %d items", BM_CONF_MAX_ITEMS);
    return NULL;
  }
  if (!word_is_key(t->text, t->len)) {
    fail(ps, t->line, "\"%.*s\" is no valid key (letters, digits and '_')",
         (int)(t->len > 40 ? 40 : t->len), t->text);
    return NULL;
  }
  if (t->len > BM_CONF_MAX_KEY) {
    fail(ps, t->line, "key longer than %d bytes", BM_CONF_MAX_KEY);
    return NULL;
  }
  if (!(it = item_add_child(ps->open[ps->depth]))) {
    fail(ps, t->line, "out of memory");
    return NULL;
  }
  ps->conf->items++;
  it->file = ps->file;
  it->line = t->line;
  if (!(it->key = strndup(t->text, t->len))) {
    fail(ps, t->line, "out of memory");
    return NULL;
  }
  return it;
}

/* Appends the value token t to item it.  Returns 0 or -1. */
static int add_value(struct parser *ps, struct bm_conf_item *it,
                     const struct token *t)
{
  struct bm_conf_value *v, *grown;
  int b;

  if (it->values_num == BM_CONF_MAX_VALUES)
    return fail(ps, t->line, "more than %d values for \"%s\"",
                BM_CONF_MAX_VALUES, it->key);
  if (grow_to(it->values_num)) {
    if (!(grown = realloc(it->values,
                          grow_to(it->values_num) * sizeof(*grown))))
      return fail(ps, t->line, "out of memory");
    it->values = grown;
  }
  v = &it->values[it->values_num];
  memset(v, 0, sizeof(*v));

  if (t->kind == TOK_STRING) {
    if (!(v->string = strndup(t->text, t->len)))
      return fail(ps, t->line, "out of memory");
    v->type = BM_CONF_STRING;
  } else if ((b = word_boolean(t->text, t->len)) >= 0) {
    v->type = BM_CONF_BOOLEAN;
    v->boolean = b == 1;
  } else if (word_is_number(t->text, t->len)) {
    char num[64];
    if (t->len >= sizeof(num))
      return fail(ps, t->line, "number \"%.40s...\" is too long", t->text);
    memcpy(num, t->text, t->len);
    num[t->len] = '\0';
    v->number = strtod(num, NULL);
    if (!isfinite(v->number))
      return fail(ps, t->line, "number \"%s\" is out of range", num);
    v->type = BM_CONF_NUMBER;
  } else if (span(t->text, t->len, IDENT_CHARS) == t->len ||
             word_is_ipv4(t->text, t->len) || word_is_ipv6(t->text, t->len)) {
    if (t->len > BM_CONF_MAX_STRING)
      return fail(ps, t->line, "string longer than %d bytes",
                  BM_CONF_MAX_STRING);
    if (!(v->string = strndup(t->text, t->len)))
      return fail(ps, t->line, "out of memory");
    v->type = BM_CONF_STRING;
  } else {
    return fail(ps, t->line, "unexpected \"%.*s\": not a number, a boolean "
                             "or an unquoted string (quote it)",
                (int)(t->len > 40 ? 40 : t->len), t->text);
  }
  it->values_num++;
  return 0;
}

static const char *tok_name(enum tok_kind k)
{
  static const char *const names[] = {"end of file", "end of line", "'<'",
                                      "'>'", "'/'", "string", "word"};
  return names[k];
}

/* After a tag: the line must end here. */
static int expect_eol(struct parser *ps, const char *what)
{
  struct token t;

  if (next_token(ps, &t) != 0)
    return -1;
  if (t.kind != TOK_EOL && t.kind != TOK_EOF)
    return fail(ps, t.line, "unexpected %s after %s: it must end the line",
                tok_name(t.kind), what);
  return 0;
}

/* "</Key>": the '<' and '/' are read. */
static int parse_end_tag(struct parser *ps, int line)
{
  struct token t;
  const struct bm_conf_item *top = ps->open[ps->depth];
  char tag[BM_CONF_MAX_KEY + 8];

  if (next_token(ps, &t) != 0)
    return -1;
  if (t.kind != TOK_WORD || !word_is_key(t.text, t.len) ||
      t.len > BM_CONF_MAX_KEY)
    return fail(ps, t.line, "expected a key after \"</\"");
  snprintf(tag, sizeof(tag), "</%.*s>", (int)t.len, t.text);
  if (ps->depth == 0)
    return fail(ps, line, "%s without an open block", tag);
  if (strlen(top->key) != t.len || memcmp(top->key, t.text, t.len) != 0)
    return fail(ps, line, "%s closes <%s> opened on line %d", tag, top->key,
                top->line);
  if (next_token(ps, &t) != 0)
    return -1;
  if (t.kind != TOK_CLOSE)
    return fail(ps, t.line, "expected '>' to end %.*s", (int)strlen(tag) - 1,
                tag);
  ps->depth--;
  return expect_eol(ps, tag);
}

/* "<Key values...>": the '<' is read. */
static int parse_start_tag(struct parser *ps, int line)
{
  struct token t;
  struct bm_conf_item *it;

  if (next_token(ps, &t) != 0)
    return -1;
  if (t.kind == TOK_SLASH)
    return parse_end_tag(ps, line);
  if (t.kind != TOK_WORD)
    return fail(ps, t.line, "expected a key after '<', got %s",
                tok_name(t.kind));
  if (ps->depth == BM_CONF_MAX_DEPTH)
    return fail(ps, line, "blocks nested deeper than %d levels",
                BM_CONF_MAX_DEPTH);
  if (!(it = new_item(ps, &t)))
    return -1;
  it->is_block = true;
  for (;;) {
    if (next_token(ps, &t) != 0)
      return -1;
    if (t.kind == TOK_CLOSE)
      break;
    if (t.kind != TOK_STRING && t.kind != TOK_WORD)
      return fail(ps, t.line, "expected a value or '>' in <%s>, got %s",
                  it->key, tok_name(t.kind));
    if (add_value(ps, it, &t) != 0)
      return -1;
  }
  ps->open[++ps->depth] = it;
  return expect_eol(ps, "a block's start tag");
}

/* "Key value...". */
static int parse_option(struct parser *ps, const struct token *key)
{
  struct token t;
  struct bm_conf_item *it;

  if (!(it = new_item(ps, key)))
    return -1;
  for (;;) {
    if (next_token(ps, &t) != 0)
      return -1;
    if (t.kind == TOK_EOL || t.kind == TOK_EOF)
      break;
    if (t.kind != TOK_STRING && t.kind != TOK_WORD)
      return fail(ps, t.line, "unexpected %s in option \"%s\"",
                  tok_name(t.kind), it->key);
    if (add_value(ps, it, &t) != 0)
      return -1;
  }
  if (it->values_num == 0)
    return fail(ps, key->line, "option \"%s\" has no value", it->key);
  return 0;
}

/* Parses the whole text into ps->open[0]'s children. */
static int parse_all(struct parser *ps)
{
  struct token t;

  for (;;) {
    if (next_token(ps, &t) != 0)
      return -1;
    switch (t.kind) {
    case TOK_EOF:
      if (ps->depth > 0)
        return fail(ps, t.line, "<%s> opened on line %d is not closed",
                    ps->open[ps->depth]->key, ps->open[ps->depth]->line);
      return 0;
    case TOK_EOL:
      break;
    case TOK_OPEN:
      if (parse_start_tag(ps, t.line) != 0)
        return -1;
      break;
    case TOK_WORD:
      if (parse_option(ps, &t) != 0)
        return -1;
      break;
    default:
      return fail(ps, t.line, "unexpected %s at the start of a line",
                  tok_name(t.kind));
    }
  }
}

/* Parses text into container's children, naming it `file` (owned by
 * conf).  On error the items parsed so far stay in container. */
static int parse_into(bm_conf_t *conf, struct bm_conf_item *container,
                      const char *text, size_t len, const char *file,
                      char *err, size_t errlen)
{
  struct parser *ps = calloc(1, sizeof(*ps));
  const char *nul;
  int status = -1;

  if (!ps) {
    if (err && errlen)
      snprintf(err, errlen, "%s: out of memory", file);
    return -1;
  }
  ps->conf = conf;
  ps->file = file;
  ps->p = text;
  ps->end = text + len;
  ps->line = 1;
  ps->open[0] = container;
  ps->err = err;
  ps->errlen = errlen;

  if (len > BM_CONF_MAX_FILE_SIZE) {
    fail(ps, 1, "larger than %d bytes", BM_CONF_MAX_FILE_SIZE);
    goto out;
  }
  if ((nul = memchr(text, '\0', len)) != NULL) {
    int line = 1;
    for (const char *c = text; c < nul; c++)
      line += *c == '\n';
    fail(ps, line, "NUL byte");
    goto out;
  }
  status = parse_all(ps);
out:
  free(ps);
  return status;
}

bm_conf_t *bm_conf_parse(const char *text, size_t len, const char *name,
                         char *err, size_t errlen)
{
  bm_conf_t *conf = conf_new();
  const char *file;

  if (!conf || !(file = conf_add_file(conf, name ? name : "<text>"))) {
    if (err && errlen)
      snprintf(err, errlen, "%s: out of memory", name ? name : "<text>");
    bm_conf_free(conf);
    return NULL;
  }
  if (parse_into(conf, &conf->root, text ? text : "", text ? len : 0, file,
                 err, errlen) != 0) {
    bm_conf_free(conf);
    return NULL;
  }
  return conf;
}

/* ---- files and Include ------------------------------------------------- */

struct reader {
  bm_conf_t *conf;
  char *err;
  size_t errlen;
};

static int __attribute__((format(printf, 2, 3)))
read_fail(struct reader *r, const char *fmt, ...)
{
  va_list ap;

  if (r->err && r->errlen) {
    va_start(ap, fmt);
    vsnprintf(r->err, r->errlen, fmt, ap);
    va_end(ap);
  }
  return -1;
}

static int read_file(struct reader *r, struct bm_conf_item *out,
                     const char *path, int depth);
static int read_dir(struct reader *r, struct bm_conf_item *out,
                    const char *dir, const char *pattern, int depth);

/* One match of an Include: a file (kept when it matches the pattern), a
 * directory, or something else (skipped, as collectd skips it). */
static int include_match(struct reader *r, struct bm_conf_item *out,
                         const char *path, const char *pattern, int depth)
{
  struct stat st;
  const char *base = strrchr(path, '/');

  base = base ? base + 1 : path;
  if (stat(path, &st) != 0)
    return 0;
  if (S_ISDIR(st.st_mode))
    return read_dir(r, out, path, pattern, depth + 1);
  if (!S_ISREG(st.st_mode))
    return 0;
  if (pattern && fnmatch(pattern, base, 0) != 0)
    return 0;
  return read_file(r, out, path, depth);
}

static int by_string(const void *a, const void *b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int read_dir(struct reader *r, struct bm_conf_item *out,
                    const char *dir, const char *pattern, int depth)
{
  DIR *d = NULL;
  struct dirent *e;
  char **names = NULL;
  size_t n = 0;
  int status = -1;

  if (depth > BM_CONF_MAX_INCLUDE_DEPTH) {
    read_fail(r, "%s: included more than %d levels deep", dir,
              BM_CONF_MAX_INCLUDE_DEPTH);
    goto out;
  }
  if (!(d = opendir(dir))) {
    read_fail(r, "cannot open directory \"%s\": %s", dir, strerror(errno));
    goto out;
  }
  while ((e = readdir(d))) {
    char **grown;
    char path[4096];

    if (e->d_name[0] == '.')
      continue;
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >=
        sizeof(path)) {
      read_fail(r, "%s/%s: path too long", dir, e->d_name);
      goto out;
    }
    if (n == BM_CONF_MAX_FILES) {
      read_fail(r, "%s: more than %d entries", dir, BM_CONF_MAX_FILES);
      goto out;
    }
    if (!(grown = realloc(names, (n + 1) * sizeof(*names))) ||
        !(grown[n] = strdup(path))) {
      if (grown)
        names = grown;
      read_fail(r, "%s: out of memory", dir);
      goto out;
    }
    names = grown;
    n++;
  }
  if (n)
    qsort(names, n, sizeof(*names), by_string);
  for (size_t i = 0; i < n; i++)
    if (include_match(r, out, names[i], pattern, depth) != 0)
      goto out;
  status = 0;
out:
  for (size_t i = 0; i < n; i++)
    free(names[i]);
  free(names);
  if (d)
    closedir(d);
  return status;
}

/* Replaces an Include item (not added to out) by what it names. */
static int include(struct reader *r, struct bm_conf_item *out,
                   const struct bm_conf_item *inc, int depth)
{
  const char *pattern = NULL;
  glob_t g;
  int rc, status = -1;

  if (inc->values_num != 1 || inc->values[0].type != BM_CONF_STRING)
    return read_fail(r, "%s:%d: Include needs exactly one string argument",
                     inc->file, inc->line);
  for (size_t i = 0; i < inc->children_num; i++) {
    const struct bm_conf_item *c = &inc->children[i];
    if (strcasecmp(c->key, "Filter") != 0 || c->values_num != 1 ||
        c->values[0].type != BM_CONF_STRING)
      return read_fail(r, "%s:%d: only Filter \"pattern\" is allowed in an "
                          "<Include> block",
                       c->file, c->line);
    pattern = c->values[0].string;
  }
  if (depth > BM_CONF_MAX_INCLUDE_DEPTH)
    return read_fail(r, "%s:%d: Include nested more than %d levels deep",
                     inc->file, inc->line, BM_CONF_MAX_INCLUDE_DEPTH);

  memset(&g, 0, sizeof(g));
  rc = glob(inc->values[0].string, GLOB_TILDE, NULL, &g);
  if (rc == GLOB_NOMATCH) {
    status = 0; /* collectd skips it too */
  } else if (rc != 0) {
    read_fail(r, "%s:%d: Include \"%s\": %s", inc->file, inc->line,
              inc->values[0].string,
              rc == GLOB_NOSPACE ? "out of memory" : "cannot read a directory");
  } else {
    status = 0;
    for (size_t i = 0; i < g.gl_pathc && status == 0; i++)
      status = include_match(r, out, g.gl_pathv[i], pattern, depth);
  }
  globfree(&g);
  return status;
}

/* Reads the whole regular file at path into a new buffer (*len bytes plus a
 * NUL).  Returns it, or NULL with the error set. */
static char *slurp(struct reader *r, const char *path, size_t *len)
{
  struct stat st;
  char *buf = NULL;
  size_t n = 0;
  /* O_NONBLOCK: opening a FIFO must not wait for a writer. */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);

  if (fd < 0) {
    read_fail(r, "cannot open \"%s\": %s", path, strerror(errno));
    return NULL;
  }
  if (fstat(fd, &st) != 0) {
    read_fail(r, "cannot stat \"%s\": %s", path, strerror(errno));
    goto fail;
  }
  if (!S_ISREG(st.st_mode)) {
    read_fail(r, "\"%s\" is not a regular file", path);
    goto fail;
  }
  if (st.st_size > BM_CONF_MAX_FILE_SIZE) {
    read_fail(r, "\"%s\" is larger than %d bytes", path,
              BM_CONF_MAX_FILE_SIZE);
    goto fail;
  }
  /* One byte more than allowed, to notice a file that grew meanwhile. */
  if (!(buf = malloc(BM_CONF_MAX_FILE_SIZE + 2))) {
    read_fail(r, "\"%s\": out of memory", path);
    goto fail;
  }
  for (;;) {
    ssize_t got = read(fd, buf + n, BM_CONF_MAX_FILE_SIZE + 1 - n);
    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0) {
      read_fail(r, "cannot read \"%s\": %s", path, strerror(errno));
      goto fail;
    }
    if (got == 0)
      break;
    n += (size_t)got;
    if (n > BM_CONF_MAX_FILE_SIZE) {
      read_fail(r, "\"%s\" is larger than %d bytes", path,
                BM_CONF_MAX_FILE_SIZE);
      goto fail;
    }
  }
  close(fd);
  buf[n] = '\0';
  *len = n;
  return buf;
fail:
  free(buf);
  close(fd);
  return NULL;
}

/* Parses the file at path and appends its top-level items to out, each
 * Include replaced by what it names. */
static int read_file(struct reader *r, struct bm_conf_item *out,
                     const char *path, int depth)
{
  struct bm_conf_item tmp;
  const char *file;
  char *text = NULL;
  size_t len = 0, i = 0;
  int status = -1;

  memset(&tmp, 0, sizeof(tmp));
  if (r->conf->files_num >= BM_CONF_MAX_FILES) {
    read_fail(r, "\"%s\": more than %d files included", path,
              BM_CONF_MAX_FILES);
    goto out;
  }
  if (!(text = slurp(r, path, &len)))
    goto out;
  if (!(file = conf_add_file(r->conf, path))) {
    read_fail(r, "\"%s\": out of memory", path);
    goto out;
  }
  if (parse_into(r->conf, &tmp, text, len, file, r->err, r->errlen) != 0)
    goto out;
  for (i = 0; i < tmp.children_num; i++) {
    struct bm_conf_item *c = &tmp.children[i];
    if (strcasecmp(c->key, "Include") == 0) {
      if (include(r, out, c, depth + 1) != 0)
        goto out;
    } else if (item_move_child(out, c) != 0) {
      read_fail(r, "\"%s\": out of memory", path);
      goto out;
    }
  }
  status = 0;
out:
  /* Moved items are zeroed, so releasing tmp frees only what is left. */
  item_release(&tmp);
  free(text);
  return status;
}

bm_conf_t *bm_conf_read(const char *path, char *err, size_t errlen)
{
  struct reader r;
  bm_conf_t *conf = conf_new();

  if (!conf) {
    if (err && errlen)
      snprintf(err, errlen, "%s: out of memory", path);
    return NULL;
  }
  r.conf = conf;
  r.err = err;
  r.errlen = errlen;
  if (read_file(&r, &conf->root, path, 0) != 0) {
    bm_conf_free(conf);
    return NULL;
  }
  return conf;
}
