/*
 * conffile.h - collectd's configuration syntax, read without collectd.
 *
 * bimetri-ctl must read the very <Plugin bimetri> block the plugin gets from
 * collectd, so this module parses collectd.conf the way collectd's
 * liboconfig (src/liboconfig/scanner.l, parser.y) and its Include handling
 * (src/daemon/configfile.c) do, into a tree shaped like oconfig_item_t.
 *
 * Syntax, line by line (a "line" may be continued, see below):
 *
 *   Key value value ...        an option: a key and one or more values
 *   <Key value ...>            a block: a key, zero or more values, and
 *     ...                        the items up to the matching
 *   </Key>                       end tag, which repeats the key exactly
 *   # comment                  from '#' (outside quotes) to the end of line
 *
 *   Keys are identifiers of [A-Za-z0-9_] (not a number or a boolean);
 *   callers compare them case-insensitively, as collectd's plugins do.  The
 *   end tag must spell the key as the start tag did (collectd: strcmp).
 *   Values are:
 *     "quoted strings"   any bytes but NUL; a backslash drops itself and
 *                        keeps the next byte literally (\" -> ", \\ -> \,
 *                        \n -> n: there are no C escapes, as in collectd);
 *                        a raw line break inside the quotes is kept; a
 *                        backslash right before the line break continues
 *                        the string on the next line without the break and
 *                        without that line's leading blanks;
 *     numbers            [+-]digits, [+-][digits].digits[(e|E)(+|-)digits],
 *                        0x<hex>, 0<octal digits>; the value is strtod's of
 *                        the text (so "010" is 10, "0x10" is 16: collectd
 *                        does the same);
 *     booleans           true yes on / false no off, lower case and
 *                        unquoted ("True" is a string, as in collectd);
 *     unquoted strings   [A-Za-z0-9_]+ that is no number or boolean, IPv4
 *                        addresses with an optional :port, IPv6 addresses
 *                        (hex digits, ':' and '.', optionally in brackets
 *                        with a :port).
 *   A backslash at the very end of a line (before \n or \r\n) joins the
 *   next line to it.  Blanks are spaces and tabs; \r is accepted only in
 *   \r\n.  A statement may end at the end of the file without a newline.
 *
 * Where this parser is stricter than collectd, it fails with a message
 * where collectd would silently split or drop text: a word that is none of
 * the value forms above (such as 1.5e3, a/b or -x, which collectd's scanner
 * cuts into several tokens) is an error; so is a byte collectd's scanner has
 * no rule for (control characters, non-ASCII outside quotes), an option
 * without a value, and a NUL byte anywhere.  Blocks without values and
 * children are kept (collectd drops them).
 *
 * Include (bm_conf_read only; bm_conf_parse never touches the file
 * system): an option `Include "path" ["pattern"]` or a block
 * `<Include "path"> Filter "pattern" </Include>` at the top level of a file
 * is replaced by the top-level items of what the path names, as collectd
 * does: the path is expanded with glob(3) (wildcards and ~; collectd's
 * wordexp would also expand $VARIABLES, which this does not), matches are
 * taken in sorted order, a directory contributes its files (recursively, in
 * sorted order, names starting with '.' skipped), and the pattern, when
 * given, keeps only files whose base name matches it (fnmatch(3)).  A path
 * that matches nothing, or a match that is neither a file nor a directory,
 * is skipped, as collectd skips it with a warning.  Relative paths are
 * relative to the current directory (collectd reads its configuration
 * before it changes to BaseDir).  Included files may include others, up to
 * BM_CONF_MAX_INCLUDE_DEPTH levels of files and directories.
 *
 * Hard limits, each an error naming the file and line: BM_CONF_MAX_FILE_SIZE
 * bytes per file, BM_CONF_MAX_FILES files per read, BM_CONF_MAX_DEPTH
 * nested blocks, BM_CONF_MAX_ITEMS items in a tree (all files together),
 * BM_CONF_MAX_VALUES values per item, BM_CONF_MAX_STRING bytes per string
 * value (after unquoting), BM_CONF_MAX_KEY bytes per key.  Only regular
 * files are read (no FIFOs or devices that could block or never end).
 *
 * Errors are one line: "<file>:<line>: <what>", e.g.
 *   collectd.conf:12: unterminated string (opened on line 11)
 *   collectd.conf:30: </Gateway> closes <Plugin> opened on line 2
 *
 * The tree is immutable once returned and may be read from several threads.
 */
#ifndef BM_CONFFILE_H
#define BM_CONFFILE_H

#include <stdbool.h>
#include <stddef.h>

#define BM_CONF_MAX_FILE_SIZE (1024 * 1024) /* bytes per file */
#define BM_CONF_MAX_FILES 256               /* files per bm_conf_read */
#define BM_CONF_MAX_INCLUDE_DEPTH 8         /* Include and directory levels */
#define BM_CONF_MAX_DEPTH 16                /* nested blocks */
#define BM_CONF_MAX_ITEMS 100000            /* items in one tree */
#define BM_CONF_MAX_VALUES 64               /* values of one item */
#define BM_CONF_MAX_STRING 8191             /* bytes of one string value */
#define BM_CONF_MAX_KEY 63                  /* bytes of one key */

enum bm_conf_type {
  BM_CONF_STRING = 1, /* quoted or unquoted string */
  BM_CONF_NUMBER,
  BM_CONF_BOOLEAN
};

/* One value.  Only the member of `type` is meaningful; string is
 * NUL-terminated, at most BM_CONF_MAX_STRING bytes, without NUL bytes
 * inside, and owned by the tree. */
struct bm_conf_value {
  enum bm_conf_type type;
  char *string;
  double number;
  bool boolean;
};

/* One option or block.  Invariants: key is 1..BM_CONF_MAX_KEY bytes of
 * [A-Za-z0-9_] (the root's key is ""); values_num <= BM_CONF_MAX_VALUES;
 * an option (is_block false) has at least one value and no children; file
 * is the name of the file the item was read from (the name given to
 * bm_conf_parse, or a path bm_conf_read opened) and line its 1-based line,
 * where the item starts.  Everything is owned by the tree. */
struct bm_conf_item {
  char *key;
  struct bm_conf_value *values;
  size_t values_num;
  struct bm_conf_item *children;
  size_t children_num;
  bool is_block;
  const char *file;
  int line;
};

/* A parsed configuration: the tree and the storage behind it. */
struct bm_conf;
typedef struct bm_conf bm_conf_t;

/* Parses `len` bytes of configuration text (not NUL-terminated; a NUL byte
 * in it is an error).  `name` (copied) names the text in errors and in the
 * items' file member.  Include items are kept as they are.  Returns the
 * tree, or NULL with a one-line reason "<name>:<line>: ..." of at most
 * errlen-1 bytes in err (if not NULL): a syntax error, a limit exceeded
 * (len > BM_CONF_MAX_FILE_SIZE included), out of memory.  The caller frees
 * the tree with bm_conf_free.  Touches no file; thread-safe. */
bm_conf_t *bm_conf_parse(const char *text, size_t len, const char *name,
                         char *err, size_t errlen);

/* Reads and parses the file at `path` and follows its Include items (see
 * the design comment).  Returns the tree, or NULL with a one-line reason in
 * err: the file or an included one cannot be opened or read, is not a
 * regular file, is too large or has an error; too many files or include
 * levels; out of memory.  The caller frees the tree with bm_conf_free. */
bm_conf_t *bm_conf_read(const char *path, char *err, size_t errlen);

/* Frees the tree and every string in it; NULL is a no-op.  Pointers into
 * the tree are invalid afterwards. */
void bm_conf_free(bm_conf_t *conf);

/* The root: key "", no values, the top-level items as children.  Owned by
 * conf, valid until bm_conf_free. */
const struct bm_conf_item *bm_conf_root(const bm_conf_t *conf);

/* "string", "number" or "boolean"; "?" for a value outside the enum. */
const char *bm_conf_type_name(enum bm_conf_type type);

#endif
