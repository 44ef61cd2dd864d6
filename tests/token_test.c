/*
 * token_test.c - TAP tests for token.c.
 *
 * Time is injected: every call gets `now` from the test, so expiry and
 * renewal are driven to the second without waiting.  Files live in a
 * mkdtemp directory; RSA and EC keys are made there by the openssl command
 * line, which also checks an RS256 signature, and sha256sum checks the
 * fingerprints, so neither is checked against the code under test.  Log
 * lines are captured through bm_log_set_sink: the mode warnings are asserted
 * on, and no line may ever hold a token or a key.  A missing openssl or
 * sha256sum binary fails the tests, it does not skip them.
 */
#include "token.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <yajl/yajl_tree.h>

#include "jwt.h"
#include "log.h"
#include "tap.h"

#define ERRLEN 512
#define NOW INT64_C(1700000000)

static char tmpdir[] = "/tmp/token_test.XXXXXX";

/* A fixed HMAC key for the tokens the file and command tests read. */
static const unsigned char sign_key[] = "token-test-signing-key-0123456789abcdef";

/*
 * Helpers
 */

static bool has(const char *s, const char *part)
{
  return s != NULL && strstr(s, part) != NULL;
}

/* tmpdir/name, in one of a few rotating static buffers. */
static const char *path(const char *name)
{
  static char bufs[8][512];
  static int next;
  char *b = bufs[next++ % 8];

  snprintf(b, sizeof(bufs[0]), "%s/%s", tmpdir, name);
  return b;
}

static double mono(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Writes data into the file in place (same inode), then sets its mode. */
static bool write_file(const char *p, const void *data, size_t len,
                       mode_t mode)
{
  int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  bool good;

  if (fd < 0)
    return false;
  good = write(fd, data, len) == (ssize_t)len;
  good = fchmod(fd, mode) == 0 && good;
  return close(fd) == 0 && good;
}

static bool write_str(const char *p, const char *s, mode_t mode)
{
  return write_file(p, s, strlen(s), mode);
}

/* Runs cmd through sh; its stdout (up to cap - 1 bytes, NUL-terminated,
 * trailing newlines cut) into out when out is not NULL.  Returns the exit
 * status, or -1. */
static int run(const char *cmd, char *out, size_t cap)
{
  FILE *p = popen(cmd, "r");
  char sink[256];
  size_t n = 0;
  int st;

  if (p == NULL)
    return -1;
  if (out != NULL) {
    n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    while (n > 0 && out[n - 1] == '\n')
      out[--n] = '\0';
  }
  while (fread(sink, 1, sizeof(sink), p) > 0)
    ;
  st = pclose(p);
  return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* An HS256 JWT of payload_json, signed with sign_key; aborts on failure (a
 * bug in the test). */
static void make_jwt(const char *payload_json, char *out, size_t cap)
{
  if (bm_jwt_sign_hs256(payload_json, sign_key, sizeof(sign_key) - 1, out,
                        cap) < 0)
    abort();
}

/* ---- captured log lines ------------------------------------------------ */

#define LOG_MAX 256
static struct {
  int level;
  char line[1024];
} logs[LOG_MAX];
static int logs_n, logs_total;

static void capture(int level, const char *line, void *ctx)
{
  (void)ctx;
  logs_total++;
  if (logs_n < LOG_MAX) {
    logs[logs_n].level = level;
    snprintf(logs[logs_n].line, sizeof(logs[0].line), "%s", line);
    logs_n++;
  }
}

/* Lines captured at `level` since the start that contain `part`. */
static int logged(int level, const char *part)
{
  int n = 0;
  for (int i = 0; i < logs_n; i++)
    if (logs[i].level == level && has(logs[i].line, part))
      n++;
  return n;
}

static int log_mark(void) { return logs_n; }

/* Lines captured since `mark` (any level). */
static int logged_since(int mark)
{
  return logs_n - mark;
}

/* ---- secrets that must never be logged ---------------------------------- */

#define SECRETS_MAX 128
static char *secrets[SECRETS_MAX];
static int secrets_n;

static void remember(const char *s)
{
  if (s && *s && secrets_n < SECRETS_MAX)
    secrets[secrets_n++] = strdup(s);
}

/* ---- decoding a token ---------------------------------------------------- */

/* Part `part` (0 header, 1 payload) of token, decoded, into out. */
static bool jwt_part(const char *token, int part, char *out, size_t cap)
{
  const char *start = token, *end;
  int n;

  for (int i = 0; i < part; i++) {
    start = strchr(start, '.');
    if (!start)
      return false;
    start++;
  }
  end = strchr(start, '.');
  if (!end)
    end = start + strlen(start);
  n = bm_base64url_decode(start, (size_t)(end - start), (unsigned char *)out,
                          cap - 1);
  if (n < 0)
    return false;
  out[n] = '\0';
  return true;
}

/* A string member of a JSON object ("" when absent or not a string), into
 * out. */
static const char *json_str(yajl_val v, const char *name)
{
  const char *p[] = {name, NULL};
  yajl_val s = v ? yajl_tree_get(v, p, yajl_t_string) : NULL;
  return s ? YAJL_GET_STRING(s) : "";
}

static int64_t json_int(yajl_val v, const char *name)
{
  const char *p[] = {name, NULL};
  yajl_val n = v ? yajl_tree_get(v, p, yajl_t_number) : NULL;
  return n && YAJL_IS_INTEGER(n) ? YAJL_GET_INTEGER(n) : INT64_MIN;
}

static yajl_val json_parse_part(const char *token, int part)
{
  static char buf[8192];
  char err[128];

  if (!jwt_part(token, part, buf, sizeof(buf)))
    return NULL;
  return yajl_tree_parse(buf, err, sizeof(err));
}

static bool is_hex(const char *s, size_t len)
{
  if (strlen(s) != len)
    return false;
  for (size_t i = 0; i < len; i++)
    if (!strchr("0123456789abcdef", s[i]))
      return false;
  return true;
}

/* sha256sum's first 12 hex digits of s. */
static void sha256sum12(const char *s, char out[13])
{
  char cmd[256], got[128] = "";

  if (!write_str(path("fp.in"), s, 0600))
    abort();
  snprintf(cmd, sizeof(cmd), "sha256sum '%s'", path("fp.in"));
  if (run(cmd, got, sizeof(got)) != 0)
    got[0] = '\0';
  memcpy(out, got, 12);
  out[12] = '\0';
}

static struct bm_token_conf file_conf(const char *p)
{
  struct bm_token_conf c;

  memset(&c, 0, sizeof(c));
  c.kind = BM_TOKEN_FILE;
  snprintf(c.file, sizeof(c.file), "%s", p);
  return c;
}

static struct bm_token_conf command_conf(const char *command, double timeout,
                                         double renew_before)
{
  struct bm_token_conf c;

  memset(&c, 0, sizeof(c));
  c.kind = BM_TOKEN_COMMAND;
  snprintf(c.command, sizeof(c.command), "%s", command);
  c.command_timeout = timeout;
  c.renew_before = renew_before;
  return c;
}

/*
 * File source
 */

static void test_file_read(void)
{
  char jwt[1024], err[ERRLEN] = "", buf[1200], fp[13];
  bm_token_t *t;
  int64_t exp = 0;
  int mark = log_mark();

  make_jwt("{\"iss\":\"t\",\"exp\":2000000000}", jwt, sizeof(jwt));
  remember(jwt);
  snprintf(buf, sizeof(buf), " \n\t%s\r\n \n", jwt);
  write_str(path("tok"), buf, 0600);
  struct bm_token_conf c = file_conf(path("tok"));
  t = bm_token_new(&c, NOW, err, sizeof(err));
  ok(t != NULL, "file: a token file with white space around the token is read (%s)", err);
  if (!t)
    return;
  is_str(bm_token_value(t), jwt, "file: white space at both ends is trimmed");
  ok(bm_token_expiry(t, &exp) && exp == 2000000000,
     "file: exp is learnt from the payload (%" PRId64 ")", exp);
  sha256sum12(jwt, fp);
  is_str(bm_token_fingerprint(t), fp, "file: the fingerprint is sha256sum's first 12 hex digits");
  is_int(logged_since(mark), 0, "file: a file of mode 600 with a JWT logs nothing");
  is_int(bm_token_refresh(t, NOW + 1, false, err, sizeof(err)), 0,
         "file: an unchanged file gives no new token");
  is_int(bm_token_refresh(t, NOW + 1, true, err, sizeof(err)), 0,
         "file: force does not change an unchanged file's token");
  bm_token_free(t);
  bm_token_free(NULL);
  ok(1, "bm_token_free(NULL) is a no-op");
}

/* The file is read again only when its mtime, size or inode changed. */
static void test_file_change(void)
{
  char j1[1024], j2[1024], j3[1024], j4[1024], err[ERRLEN] = "";
  struct stat st;
  struct timespec times[2];
  bm_token_t *t;
  int64_t exp = 0;
  const char *p = path("rot");

  /* Four tokens of one length. */
  make_jwt("{\"exp\":2000000001}", j1, sizeof(j1));
  make_jwt("{\"exp\":2000000002}", j2, sizeof(j2));
  make_jwt("{\"exp\":2000000003}", j3, sizeof(j3));
  make_jwt("{\"exp\":2000000004}", j4, sizeof(j4));
  remember(j1);
  remember(j2);
  remember(j3);
  remember(j4);
  if (strlen(j1) != strlen(j2) || strlen(j1) != strlen(j3) ||
      strlen(j1) != strlen(j4))
    abort();
  write_str(p, j1, 0600);
  struct bm_token_conf c = file_conf(p);
  t = bm_token_new(&c, NOW, err, sizeof(err));
  ok(t != NULL, "change: read (%s)", err);
  if (!t)
    return;

  /* Same inode, same size, mtime put back: not read again. */
  stat(p, &st);
  write_str(p, j2, 0600);
  times[0] = st.st_atim;
  times[1] = st.st_mtim;
  utimensat(AT_FDCWD, p, times, 0);
  is_int(bm_token_refresh(t, NOW, false, err, sizeof(err)), 0,
         "change: same inode, size and mtime: the file is not read again");
  is_str(bm_token_value(t), j1, "change: ... and the old token stays");

  /* Only the mtime moves. */
  times[1].tv_nsec = (times[1].tv_nsec + 1000) % 1000000000;
  times[1].tv_sec += 1;
  utimensat(AT_FDCWD, p, times, 0);
  is_int(bm_token_refresh(t, NOW, false, err, sizeof(err)), 1,
         "change: a new mtime: read again, a new token");
  is_str(bm_token_value(t), j2, "change: ... the one in the file now");
  ok(bm_token_expiry(t, &exp) && exp == 2000000002, "change: ... with its exp");

  /* A new file renamed over it, with the same size and mtime: the inode. */
  stat(p, &st);
  write_str(path("rot.new"), j3, 0600);
  times[0] = st.st_atim;
  times[1] = st.st_mtim;
  utimensat(AT_FDCWD, path("rot.new"), times, 0);
  rename(path("rot.new"), p);
  is_int(bm_token_refresh(t, NOW, false, err, sizeof(err)), 1,
         "change: renamed over (same size and mtime, new inode): a new token");
  is_str(bm_token_value(t), j3, "change: ... the renamed one");

  /* Touched, content the same: read again, but no new token. */
  times[1].tv_sec += 5;
  utimensat(AT_FDCWD, p, times, 0);
  is_int(bm_token_refresh(t, NOW, false, err, sizeof(err)), 0,
         "change: touched with the same content: no new token");

  /* A size change alone is enough (mtime put back). */
  {
    char longer[1100];
    snprintf(longer, sizeof(longer), "%s\n\n", j4);
    stat(p, &st);
    write_str(p, longer, 0600);
    times[0] = st.st_atim;
    times[1] = st.st_mtim;
    utimensat(AT_FDCWD, p, times, 0);
    is_int(bm_token_refresh(t, NOW, false, err, sizeof(err)), 1,
           "change: another size, same mtime and inode: a new token");
    is_str(bm_token_value(t), j4, "change: ... trimmed");
  }
  bm_token_free(t);
}

static void test_file_errors(void)
{
  char jwt[1024], err[ERRLEN], big[9000];
  bm_token_t *t;
  const char *p = path("bad");
  struct bm_token_conf c = file_conf(p);
  struct bm_token_conf missing = file_conf(path("missing"));

  err[0] = '\0';
  ok(bm_token_new(&missing, NOW, err, sizeof(err)) == NULL,
     "errors: a missing file is refused");
  ok(has(err, path("missing")), "errors: ... the reason names the file (%s)", err);

  write_str(p, "", 0600);
  err[0] = '\0';
  ok(bm_token_new(&c, NOW, err, sizeof(err)) == NULL && has(err, "is empty"),
     "errors: an empty file is refused (%s)", err);
  write_str(p, " \n\t\r\n", 0600);
  err[0] = '\0';
  ok(bm_token_new(&c, NOW, err, sizeof(err)) == NULL && has(err, "is empty"),
     "errors: a file of white space is empty (%s)", err);

  static const struct {
    const char *content, *what;
  } bad[] = {
      {"abc def", "a space inside"},
      {"abc\tdef", "a tab inside"},
      {"abc\001def", "a control character"},
      {"t\xc3\xb6ken", "UTF-8"},
      {"abc\177", "DEL"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    write_str(p, bad[i].content, 0600);
    err[0] = '\0';
    ok(bm_token_new(&c, NOW, err, sizeof(err)) == NULL &&
           has(err, "character no JWT has"),
       "errors: %s is refused (%s)", bad[i].what, err);
  }

  /* Sizes: the longest token is 8191 bytes. */
  memset(big, 'a', sizeof(big));
  write_file(p, big, 8191, 0600);
  t = bm_token_new(&c, NOW, err, sizeof(err));
  ok(t && strlen(bm_token_value(t)) == 8191, "errors: a token of 8191 bytes is read");
  bm_token_free(t);
  big[8191] = '\n';
  write_file(p, big, 8192, 0600);
  t = bm_token_new(&c, NOW, err, sizeof(err));
  ok(t && strlen(bm_token_value(t)) == 8191,
     "errors: 8191 bytes and a newline are read");
  bm_token_free(t);
  memset(big, 'a', sizeof(big));
  write_file(p, big, 8192, 0600);
  err[0] = '\0';
  ok(bm_token_new(&c, NOW, err, sizeof(err)) == NULL && has(err, "more than"),
     "errors: 8192 bytes are too many (%s)", err);
  write_file(p, big, sizeof(big), 0600);
  err[0] = '\0';
  ok(bm_token_new(&c, NOW, err, sizeof(err)) == NULL && has(err, "more than"),
     "errors: 9000 bytes are too many (%s)", err);

  /* A refresh that fails keeps the token in use. */
  make_jwt("{\"exp\":2000000000}", jwt, sizeof(jwt));
  remember(jwt);
  write_str(p, jwt, 0600);
  t = bm_token_new(&c, NOW, err, sizeof(err));
  ok(t != NULL, "errors: a good token again");
  if (!t)
    return;
  write_str(p, "", 0600);
  err[0] = '\0';
  is_int(bm_token_refresh(t, NOW, false, err, sizeof(err)), -1,
         "errors: the file emptied: the refresh fails");
  ok(has(err, "is empty"), "errors: ... saying why (%s)", err);
  is_str(bm_token_value(t), jwt, "errors: ... and the previous token stays");
  write_str(p, "has space", 0600);
  is_int(bm_token_refresh(t, NOW, false, err, sizeof(err)), -1,
         "errors: a bad character: the refresh fails");
  is_str(bm_token_value(t), jwt, "errors: ... the previous token stays");
  unlink(p);
  err[0] = '\0';
  is_int(bm_token_refresh(t, NOW, false, err, sizeof(err)), -1,
         "errors: the file removed: the refresh fails");
  ok(has(err, p), "errors: ... naming the file (%s)", err);
  is_str(bm_token_value(t), jwt, "errors: ... the previous token stays");
  write_str(p, jwt, 0600);
  is_int(bm_token_refresh(t, NOW, false, err, sizeof(err)), 0,
         "errors: the same token back: usable, no change");
  bm_token_free(t);
}

static void test_file_mode(void)
{
  char jwt[1024], err[ERRLEN];
  bm_token_t *t;
  int mark;
  const char *p = path("modetok");
  struct bm_token_conf c = file_conf(p);

  make_jwt("{\"exp\":2000000000}", jwt, sizeof(jwt));
  remember(jwt);

  write_str(p, jwt, 0644);
  mark = logs_n;
  t = bm_token_new(&c, NOW, err, sizeof(err));
  ok(t != NULL, "mode: a file of mode 644 is still used");
  ok(logged(BM_LOG_WARNING, "is readable by group or others (mode 0644)") == 1 &&
         logged(BM_LOG_WARNING, p) >= 1,
     "mode: 644 gets a warning naming the file and the mode");
  ok(logged_since(mark) == 1, "mode: one line");
  bm_token_free(t);

  write_str(p, jwt, 0640);
  mark = logs_n;
  t = bm_token_new(&c, NOW, err, sizeof(err));
  ok(t && logged_since(mark) == 1 && has(logs[mark].line, "(mode 0640)"),
     "mode: 640 (group may read) gets a warning");
  bm_token_free(t);

  write_str(p, jwt, 0400);
  mark = logs_n;
  t = bm_token_new(&c, NOW, err, sizeof(err));
  ok(t && logged_since(mark) == 0, "mode: 400 gets none");
  bm_token_free(t);
}

/* A token that is no JWT is sent as it is, without expiry. */
static void test_opaque(void)
{
  char err[ERRLEN];
  bm_token_t *t;
  int64_t exp = -1;
  int mark = logs_n;
  const char *p = path("opaque");
  struct bm_token_conf c = file_conf(p);

  remember("opaque-api-key-3f9a7c");
  write_str(p, "opaque-api-key-3f9a7c\n", 0600);
  t = bm_token_new(&c, NOW, err, sizeof(err));
  ok(t != NULL, "opaque: a token that is no JWT is accepted (%s)", t ? "" : err);
  if (!t)
    return;
  is_str(bm_token_value(t), "opaque-api-key-3f9a7c", "opaque: ... as it is");
  ok(!bm_token_expiry(t, &exp) && exp == -1, "opaque: ... without expiry");
  is_int(bm_token_usable(t, INT64_C(4000000000), 0, err, sizeof(err)), 0,
         "opaque: ... usable at any time");
  ok(logged_since(mark) == 1 && logs[mark].level == BM_LOG_WARNING &&
         has(logs[mark].line, "no JWT") &&
         has(logs[mark].line, bm_token_fingerprint(t)),
     "opaque: a warning names it by its fingerprint");
  bm_token_free(t);
}

/*
 * bm_token_usable
 */

static bm_token_t *file_token(const char *payload, char *jwt, size_t cap)
{
  char err[ERRLEN];
  struct bm_token_conf c = file_conf(path("usable"));

  make_jwt(payload, jwt, cap);
  remember(jwt);
  write_str(path("usable"), jwt, 0600);
  return bm_token_new(&c, NOW, err, sizeof(err));
}

static void test_usable(void)
{
  char jwt[1024], why[128];
  bm_token_t *t;
  int64_t exp;

  t = file_token("{\"exp\":1000}", jwt, sizeof(jwt));
  ok(t != NULL, "usable: an expired token can be loaded");
  if (!t)
    return;
  is_int(bm_token_usable(t, 999, 0, why, sizeof(why)), 0, "usable: 1 s before exp");
  why[0] = '\0';
  is_int(bm_token_usable(t, 1000, 0, why, sizeof(why)), -1, "usable: not at exp");
  is_str(why, "token expired", "usable: ... \"token expired\"");
  is_int(bm_token_usable(t, 1059, 60, why, sizeof(why)), 0,
         "usable: 59 s past exp with 60 s leeway: still usable");
  is_int(bm_token_usable(t, 1060, 60, why, sizeof(why)), -1,
         "usable: 60 s past exp with 60 s leeway: expired");
  is_int(bm_token_usable(t, INT64_C(1700000000), 86400, why, sizeof(why)), -1,
         "usable: long expired");
  bm_token_free(t);

  t = file_token("{\"nbf\":2000,\"exp\":5000}", jwt, sizeof(jwt));
  ok(t != NULL, "usable: a token valid from 2000");
  if (!t)
    return;
  why[0] = '\0';
  is_int(bm_token_usable(t, 1000, 0, why, sizeof(why)), -1, "usable: not before nbf");
  ok(has(why, "not valid before 2000"), "usable: ... \"%s\"", why);
  is_int(bm_token_usable(t, 1939, 60, why, sizeof(why)), -1,
         "usable: 61 s before nbf with 60 s leeway: not yet");
  is_int(bm_token_usable(t, 1940, 60, why, sizeof(why)), 0,
         "usable: 60 s before nbf with 60 s leeway: usable");
  is_int(bm_token_usable(t, 2000, 0, why, sizeof(why)), 0, "usable: at nbf");
  is_int(bm_token_usable(t, 4999, 0, why, sizeof(why)), 0, "usable: before exp");
  bm_token_free(t);

  /* The extremes a token may carry: no overflow at either end. */
  t = file_token("{\"nbf\":-9223372036854775808,\"exp\":9223372036854775807}",
                 jwt, sizeof(jwt));
  ok(t != NULL, "usable: a token valid from INT64_MIN to INT64_MAX");
  if (!t)
    return;
  is_int(bm_token_usable(t, INT64_C(1700000000), 60, why, sizeof(why)), 0,
         "usable: ... is usable now, with a leeway");
  ok(bm_token_expiry(t, &exp) && exp == INT64_MAX, "usable: ... exp INT64_MAX");
  bm_token_free(t);

  t = file_token("{\"iss\":\"no-exp\"}", jwt, sizeof(jwt));
  ok(t != NULL, "usable: a JWT without exp");
  if (!t)
    return;
  ok(!bm_token_expiry(t, &exp), "usable: ... has no expiry");
  is_int(bm_token_usable(t, INT64_C(9000000000), 0, why, sizeof(why)), 0,
         "usable: ... and is always usable");
  bm_token_free(t);
}

/*
 * Minting
 */

static bool keys_ok;

static void test_keygen(void)
{
  char cmd[1024];

  snprintf(cmd, sizeof(cmd),
           "cd '%s' && "
           "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.key 2>/dev/null && "
           "openssl pkey -in rsa.key -pubout -out rsa.pub && "
           "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.key 2>/dev/null && "
           "openssl pkey -in ec.key -pubout -out ec.pub && "
           "openssl pkey -in rsa.key -aes256 -passout pass:secret -out rsa-enc.key && "
           "chmod 600 rsa.key ec.key rsa-enc.key",
           tmpdir);
  keys_ok = run(cmd, NULL, 0) == 0;
  ok(keys_ok, "the openssl command line made RSA and EC keys");
  /* 40-byte HMAC key and a trailing newline, the way editors save it. */
  ok(write_str(path("hs.key"), "hs256-key-0123456789-0123456789-01234567\n", 0600),
     "an HS256 key file");
  ok(write_str(path("hs32.key"), "0123456789abcdef0123456789abcdef\n", 0600) &&
         write_str(path("hs31.key"), "0123456789abcdef0123456789abcde\n", 0600),
     "HS256 key files of 32 and 31 bytes");
  remember("hs256-key-0123456789-0123456789-01234567");
  remember("0123456789abcdef0123456789abcde");
}

static struct bm_token_conf mint_conf(enum bm_token_alg alg, const char *key)
{
  struct bm_token_conf c;

  memset(&c, 0, sizeof(c));
  c.kind = BM_TOKEN_MINT;
  c.alg = alg;
  snprintf(c.file, sizeof(c.file), "%s", key);
  snprintf(c.issuer, sizeof(c.issuer), "collectd-test");
  snprintf(c.subject, sizeof(c.subject), "plant-7");
  snprintf(c.audience, sizeof(c.audience), "bimetri-gateway");
  c.lifetime = 600;
  c.renew_before = 60;
  snprintf(c.claims[0].name, sizeof(c.claims[0].name), "site");
  snprintf(c.claims[0].value, sizeof(c.claims[0].value), "north \"7\"");
  snprintf(c.claims[1].name, sizeof(c.claims[1].name), "role");
  snprintf(c.claims[1].value, sizeof(c.claims[1].value), "relay-control");
  c.n_claims = 2;
  return c;
}

/* Checks header and claims of a token minted at `now` by mint_conf. */
static void check_minted(const char *what, const char *token, const char *alg,
                         int64_t now, char *jti, size_t jticap)
{
  yajl_val h = json_parse_part(token, 0), p = json_parse_part(token, 1);

  ok(h != NULL && p != NULL, "%s: header and payload are JSON", what);
  is_str(json_str(h, "alg"), alg, "%s: alg", what);
  is_str(json_str(h, "typ"), "JWT", "%s: typ", what);
  is_str(json_str(p, "iss"), "collectd-test", "%s: iss", what);
  is_str(json_str(p, "sub"), "plant-7", "%s: sub", what);
  is_str(json_str(p, "aud"), "bimetri-gateway", "%s: aud", what);
  is_int(json_int(p, "iat"), now, "%s: iat is now", what);
  is_int(json_int(p, "nbf"), now, "%s: nbf is now", what);
  is_int(json_int(p, "exp"), now + 600, "%s: exp is iat + Lifetime", what);
  ok(is_hex(json_str(p, "jti"), 32), "%s: jti is 32 hex digits (%s)", what,
     json_str(p, "jti"));
  is_str(json_str(p, "site"), "north \"7\"", "%s: a Claim, quotes escaped", what);
  is_str(json_str(p, "role"), "relay-control", "%s: another Claim", what);
  if (jti)
    snprintf(jti, jticap, "%s", json_str(p, "jti"));
  yajl_tree_free(h);
  yajl_tree_free(p);
}

static void test_mint_hs256(void)
{
  char err[ERRLEN] = "", jti1[40] = "", jti2[40] = "", first[BM_JWT_MAX_SIZE];
  struct bm_token_conf c = mint_conf(BM_TOKEN_HS256, path("hs.key"));
  const unsigned char key[] = "hs256-key-0123456789-0123456789-01234567";
  bm_token_t *t = bm_token_new(&c, NOW, err, sizeof(err));
  int64_t exp = 0;
  char fp[13];

  ok(t != NULL, "HS256: minted (%s)", err);
  if (!t)
    return;
  remember(bm_token_value(t));
  check_minted("HS256", bm_token_value(t), "HS256", NOW, jti1, sizeof(jti1));
  is_int(bm_jwt_verify_hs256(bm_token_value(t), key, sizeof(key) - 1, err,
                             sizeof(err)),
         0, "HS256: signed with the key file's bytes, the newline cut");
  ok(bm_token_expiry(t, &exp) && exp == NOW + 600, "HS256: bm_token_expiry is exp");
  sha256sum12(bm_token_value(t), fp);
  is_str(bm_token_fingerprint(t), fp, "HS256: the fingerprint is sha256sum's");

  /* Renewal: exp - now > renew_before keeps it; <= renews. */
  snprintf(first, sizeof(first), "%s", bm_token_value(t));
  is_int(bm_token_refresh(t, NOW + 539, false, err, sizeof(err)), 0,
         "HS256: 61 s before exp (RenewBefore 60): kept");
  is_str(bm_token_value(t), first, "HS256: ... the same token");
  is_int(bm_token_refresh(t, NOW + 540, false, err, sizeof(err)), 1,
         "HS256: 60 s before exp: renewed");
  remember(bm_token_value(t));
  check_minted("HS256 renewed", bm_token_value(t), "HS256", NOW + 540, jti2,
               sizeof(jti2));
  ok(strcmp(jti1, jti2) != 0, "HS256: the renewed token has a new jti");
  ok(bm_token_expiry(t, &exp) && exp == NOW + 540 + 600,
     "HS256: ... and the new exp");
  is_int(bm_token_refresh(t, NOW + 541, false, err, sizeof(err)), 0,
         "HS256: right after the renewal: kept");

  /* force renews at once. */
  snprintf(first, sizeof(first), "%s", bm_token_value(t));
  is_int(bm_token_refresh(t, NOW + 541, true, err, sizeof(err)), 1,
         "HS256: force renews");
  remember(bm_token_value(t));
  ok(strcmp(first, bm_token_value(t)) != 0, "HS256: ... a different token");

  /* A key file that became unreadable: the renewal fails, the token stays. */
  snprintf(first, sizeof(first), "%s", bm_token_value(t));
  rename(path("hs.key"), path("hs.key.away"));
  err[0] = '\0';
  is_int(bm_token_refresh(t, NOW + 541, true, err, sizeof(err)), -1,
         "HS256: without its key file the renewal fails");
  ok(has(err, path("hs.key")), "HS256: ... naming the file (%s)", err);
  is_str(bm_token_value(t), first, "HS256: ... the previous token stays");
  rename(path("hs.key.away"), path("hs.key"));
  bm_token_free(t);

  /* One newline is cut, nothing else: a CR or a second newline are the
   * key's bytes (the other side reads the file the same way). */
  {
    static const char *ends[] = {"\r\n", "\n\n", "\r"};
    for (size_t i = 0; i < sizeof(ends) / sizeof(ends[0]); i++) {
      char body[128];
      size_t blen = (size_t)snprintf(body, sizeof(body), "%s%s", key, ends[i]);

      write_file(path("hsend.key"), body, blen, 0600);
      c = mint_conf(BM_TOKEN_HS256, path("hsend.key"));
      t = bm_token_new(&c, NOW, err, sizeof(err));
      ok(t != NULL, "HS256: a key file ending in %s (%s)",
         i == 0 ? "CR LF" : i == 1 ? "two newlines" : "CR", err);
      if (!t)
        continue;
      remember(bm_token_value(t));
      is_int(bm_jwt_verify_hs256(bm_token_value(t), (const unsigned char *)body,
                                 blen - (body[blen - 1] == '\n'), err,
                                 sizeof(err)),
             0, "HS256: ... signs with all its bytes but the last newline");
      bm_token_free(t);
    }
  }

  /* Key length: 32 bytes are the minimum. */
  c = mint_conf(BM_TOKEN_HS256, path("hs32.key"));
  t = bm_token_new(&c, NOW, err, sizeof(err));
  ok(t != NULL, "HS256: a 32-byte key (and a newline) is enough");
  if (t)
    remember(bm_token_value(t));
  bm_token_free(t);
  c = mint_conf(BM_TOKEN_HS256, path("hs31.key"));
  err[0] = '\0';
  ok(bm_token_new(&c, NOW, err, sizeof(err)) == NULL && has(err, "32"),
     "HS256: a 31-byte key is refused (%s)", err);
  c = mint_conf(BM_TOKEN_HS256, path("no-such.key"));
  err[0] = '\0';
  ok(bm_token_new(&c, NOW, err, sizeof(err)) == NULL && has(err, path("no-such.key")),
     "HS256: a missing key file is refused, naming it (%s)", err);

  /* Optional claims left out. */
  c = mint_conf(BM_TOKEN_HS256, path("hs.key"));
  c.issuer[0] = c.subject[0] = c.audience[0] = '\0';
  c.n_claims = 0;
  t = bm_token_new(&c, NOW, err, sizeof(err));
  ok(t != NULL, "HS256: minted without iss/sub/aud/claims");
  if (t) {
    char payload[1024];
    remember(bm_token_value(t));
    ok(jwt_part(bm_token_value(t), 1, payload, sizeof(payload)) &&
           !has(payload, "\"iss\"") && !has(payload, "\"sub\"") &&
           !has(payload, "\"aud\"") && has(payload, "\"exp\"") &&
           has(payload, "\"jti\""),
       "HS256: ... the empty ones are left out (%s)", payload);
  }
  bm_token_free(t);
}

/* The signature of an RS256 token, checked by the openssl command line. */
static bool openssl_verifies(const char *token, const char *pub)
{
  char cmd[1024], sig[1024];
  const char *dot = strrchr(token, '.');
  int n;

  if (!dot)
    return false;
  n = bm_base64url_decode(dot + 1, strlen(dot + 1), (unsigned char *)sig,
                          sizeof(sig));
  if (n <= 0 || !write_file(path("data"), token, (size_t)(dot - token), 0600) ||
      !write_file(path("sig"), sig, (size_t)n, 0600))
    return false;
  snprintf(cmd, sizeof(cmd),
           "openssl dgst -sha256 -verify '%s' -signature '%s' '%s' 2>&1",
           pub, path("sig"), path("data"));
  return run(cmd, sig, sizeof(sig)) == 0 && has(sig, "Verified OK");
}

static void test_mint_rs_es(void)
{
  char err[ERRLEN] = "";
  struct bm_token_conf c;
  bm_token_t *t;
  int mark;

  if (!keys_ok) {
    ok(0, "RS256/ES256: no keys");
    return;
  }
  c = mint_conf(BM_TOKEN_RS256, path("rsa.key"));
  mark = logs_n;
  t = bm_token_new(&c, NOW, err, sizeof(err));
  ok(t != NULL, "RS256: minted (%s)", err);
  if (t) {
    remember(bm_token_value(t));
    check_minted("RS256", bm_token_value(t), "RS256", NOW, NULL, 0);
    is_int(bm_jwt_verify_rs256(bm_token_value(t), path("rsa.pub"), err, sizeof(err)),
           0, "RS256: verifies with the public key (jwt.c)");
    ok(openssl_verifies(bm_token_value(t), path("rsa.pub")),
       "RS256: verifies with the public key (openssl dgst)");
    is_int(bm_token_refresh(t, NOW + 540, false, err, sizeof(err)), 1,
           "RS256: renewed RenewBefore seconds before exp");
    remember(bm_token_value(t));
    ok(openssl_verifies(bm_token_value(t), path("rsa.pub")),
       "RS256: the renewed token verifies too");
    is_int(logged_since(mark), 0, "RS256: a key file of mode 600 logs nothing");
  }
  bm_token_free(t);

  c = mint_conf(BM_TOKEN_ES256, path("ec.key"));
  t = bm_token_new(&c, NOW, err, sizeof(err));
  ok(t != NULL, "ES256: minted (%s)", err);
  if (t) {
    remember(bm_token_value(t));
    check_minted("ES256", bm_token_value(t), "ES256", NOW, NULL, 0);
    is_int(bm_jwt_verify_es256(bm_token_value(t), path("ec.pub"), err, sizeof(err)),
           0, "ES256: verifies with the public key");
    is_int(bm_token_refresh(t, NOW, true, err, sizeof(err)), 1, "ES256: force renews");
    remember(bm_token_value(t));
    is_int(bm_jwt_verify_es256(bm_token_value(t), path("ec.pub"), err, sizeof(err)),
           0, "ES256: the renewed token verifies");
  }
  bm_token_free(t);

  c = mint_conf(BM_TOKEN_RS256, path("ec.key"));
  err[0] = '\0';
  ok(bm_token_new(&c, NOW, err, sizeof(err)) == NULL && err[0],
     "RS256 with an EC key is refused (%s)", err);
  c = mint_conf(BM_TOKEN_ES256, path("rsa.key"));
  err[0] = '\0';
  ok(bm_token_new(&c, NOW, err, sizeof(err)) == NULL && err[0],
     "ES256 with an RSA key is refused (%s)", err);
  c = mint_conf(BM_TOKEN_RS256, path("rsa-enc.key"));
  err[0] = '\0';
  ok(bm_token_new(&c, NOW, err, sizeof(err)) == NULL && err[0],
     "RS256 with an encrypted key is refused, without a prompt (%s)", err);
  c = mint_conf(BM_TOKEN_ES256, path("hs.key"));
  err[0] = '\0';
  ok(bm_token_new(&c, NOW, err, sizeof(err)) == NULL && err[0],
     "ES256 with a file that is no PEM key is refused (%s)", err);

  /* Mode warnings for key files. */
  chmod(path("ec.key"), 0644);
  c = mint_conf(BM_TOKEN_ES256, path("ec.key"));
  mark = logs_n;
  t = bm_token_new(&c, NOW, err, sizeof(err));
  ok(t && logged_since(mark) == 1 && logs[mark].level == BM_LOG_WARNING &&
         has(logs[mark].line, "Token KeyFile") &&
         has(logs[mark].line, path("ec.key")) &&
         has(logs[mark].line, "(mode 0644)"),
     "ES256: a key file of mode 644 gets a warning naming it");
  if (t) {
    remember(bm_token_value(t));
    mark = logs_n;
    bm_token_refresh(t, NOW, true, err, sizeof(err));
    remember(bm_token_value(t));
    is_int(logged_since(mark), 0, "ES256: ... once, not at every renewal");
  }
  bm_token_free(t);
  chmod(path("ec.key"), 0600);
  chmod(path("hs.key"), 0604);
  c = mint_conf(BM_TOKEN_HS256, path("hs.key"));
  mark = logs_n;
  t = bm_token_new(&c, NOW, err, sizeof(err));
  ok(t && logged(BM_LOG_WARNING, "(mode 0604)") == 1,
     "HS256: a key file others may read gets a warning");
  if (t)
    remember(bm_token_value(t));
  bm_token_free(t);
  chmod(path("hs.key"), 0600);
}

/*
 * Command
 */

/* The state letter of /proc/<pid>/stat ('R', 'S', 'Z', ...), or 0. */
static char process_state(pid_t pid)
{
  char p[64], buf[512], *close_paren;
  FILE *f;
  size_t n;

  snprintf(p, sizeof(p), "/proc/%d/stat", (int)pid);
  if (!(f = fopen(p, "r")))
    return 0;
  n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  close_paren = strrchr(buf, ')');
  return close_paren && close_paren[1] == ' ' ? close_paren[2] : 0;
}

/* bm_token_new with TokenCommand cmd and a 0.3 s timeout: refused with an
 * error that contains want, after the timeout and long before the
 * command's own end (5 s). */
static void refused_after_timeout(const char *cmd, const char *want,
                                  const char *what)
{
  char err[ERRLEN] = "";
  struct bm_token_conf c = command_conf(cmd, 0.3, 60);
  double t0 = mono(), took;
  bm_token_t *t = bm_token_new(&c, NOW, err, sizeof(err));

  took = mono() - t0;
  ok(t == NULL && has(err, want), "command: %s is refused (%s)", what, err);
  ok(took >= 0.25 && took < 1.5, "command: ... after the 0.3 s timeout (%.2f s)",
     took);
  bm_token_free(t);
}

/* Lines in path (0 when there is none). */
static int run_count(const char *p)
{
  FILE *f = fopen(p, "r");
  int n = 0, ch;

  if (!f)
    return 0;
  while ((ch = fgetc(f)) != EOF)
    n += ch == '\n';
  fclose(f);
  return n;
}

static void test_command(void)
{
  char err[ERRLEN] = "", jwt[1024], jwt2[1024], cmd[1024];
  struct bm_token_conf c;
  bm_token_t *t;
  int64_t exp = 0;
  double t0, took;

  snprintf(cmd, sizeof(cmd), "{\"exp\":%" PRId64 "}", NOW + 600);
  make_jwt(cmd, jwt, sizeof(jwt));
  snprintf(cmd, sizeof(cmd), "{\"exp\":%" PRId64 ",\"n\":2}", NOW + 1200);
  make_jwt(cmd, jwt2, sizeof(jwt2));
  remember(jwt);
  remember(jwt2);
  write_str(path("cmdtok"), jwt, 0600);

  snprintf(cmd, sizeof(cmd), "tok=$(cat '%s') && printf '  %%s\\n\\n' \"$tok\"",
           path("cmdtok"));
  c = command_conf(cmd, 5, 60);
  t = bm_token_new(&c, NOW, err, sizeof(err));
  ok(t != NULL, "command: its output is the token (%s)", err);
  if (!t)
    return;
  is_str(bm_token_value(t), jwt, "command: ... trimmed");
  ok(bm_token_expiry(t, &exp) && exp == NOW + 600, "command: exp learnt");

  /* Renewal runs the command again, only when due. */
  write_str(path("cmdtok"), jwt2, 0600);
  is_int(bm_token_refresh(t, NOW + 539, false, err, sizeof(err)), 0,
         "command: not run before RenewBefore");
  is_str(bm_token_value(t), jwt, "command: ... the token stays");
  is_int(bm_token_refresh(t, NOW + 540, false, err, sizeof(err)), 1,
         "command: run again RenewBefore seconds before exp");
  is_str(bm_token_value(t), jwt2, "command: ... its new output is the token");
  is_int(bm_token_refresh(t, NOW + 540, true, err, sizeof(err)), 0,
         "command: force runs it; the same output is no new token");
  unlink(path("cmdtok"));
  err[0] = '\0';
  is_int(bm_token_refresh(t, NOW + 540, true, err, sizeof(err)), -1,
         "command: a failing renewal fails");
  ok(has(err, "TokenCommand failed"), "command: ... saying so (%s)", err);
  is_str(bm_token_value(t), jwt2, "command: ... and the token stays");
  bm_token_free(t);

  static const struct {
    const char *cmd, *reason, *what;
  } bad[] = {
      {"echo tok; exit 3", "TokenCommand failed (exit status 3)", "a command that exits 3"},
      {"kill -TERM $$", "TokenCommand failed (signal 15)", "a command killed by a signal"},
      {"true", "TokenCommand printed nothing", "a command that prints nothing"},
      {"printf '\\n \\n'", "TokenCommand printed nothing", "a command that prints white space"},
      {"cat", "TokenCommand printed nothing", "a command reading stdin (/dev/null)"},
      {"echo 'two words'", "TokenCommand printed a character no JWT has", "a command printing a space"},
      {"head -c 9000 /dev/zero | tr '\\000' a", "TokenCommand printed more than", "a command printing 9000 bytes"},
      {"/nonexistent/tool", "TokenCommand failed (exit status 127)", "a command that does not exist"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    c = command_conf(bad[i].cmd, 5, 60);
    err[0] = '\0';
    t0 = mono();
    t = bm_token_new(&c, NOW, err, sizeof(err));
    took = mono() - t0;
    ok(t == NULL && has(err, bad[i].reason) && took < 4,
       "command: %s is refused: \"%s\" (%.1f s)", bad[i].what, err, took);
    bm_token_free(t);
  }

  /* The timeout bounds the wait: for the output, and for the exit once
   * a token was printed and the output closed (the command is killed). */
  refused_after_timeout("exec sleep 5", "TokenCommand did not finish within 0.3 s",
                        "a command that takes too long");
  refused_after_timeout("echo partial; exec sleep 5", "did not finish",
                        "printing and then hanging");
  snprintf(cmd, sizeof(cmd), "printf '%%s' '%s'; exec >&-; sleep 5", jwt);
  refused_after_timeout(cmd, "TokenCommand did not exit within 0.3 s",
                        "one that closes its output and runs on");

  /* A failing renewal is tried again after 1, 2, 4 ... 32 s, then every
   * 60 s, unless forced; a success starts the series again. */
  write_str(path("cmdtok"), jwt, 0600);
  unlink(path("runs"));
  snprintf(cmd, sizeof(cmd), "echo run >> '%s'; cat '%s'", path("runs"),
           path("cmdtok"));
  c = command_conf(cmd, 5, 60);
  t = bm_token_new(&c, NOW, err, sizeof(err));
  ok(t != NULL, "command backoff: the first token (%s)", err);
  if (t) {
    static const int64_t at[] = {540, 540, 541, 541, 542, 543, 546, 547, 554,
                                 555, 570, 571, 602, 603, 662, 663, 722, 723};
    static const int runs[] = {2, 2, 3, 3, 3, 4, 4, 5, 5,
                               6, 6, 7, 7, 8, 8, 9, 9, 10};
    int counted = 0, bad = 0;

    unlink(path("cmdtok")); /* every renewal fails from now on */
    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
      int rc = bm_token_refresh(t, NOW + at[i], false, err, sizeof(err));
      counted = run_count(path("runs"));
      if (counted != runs[i] || rc != (counted > (i ? runs[i - 1] : 1) ? -1 : 0)) {
        diag("at NOW + %" PRId64 ": rc %d, %d runs, want %d", at[i], rc,
             counted, runs[i]);
        bad++;
      }
    }
    is_int(bad, 0, "command backoff: failed renewals at +0, 1, 3, 7, 15, 31, "
                   "63 s, then every 60 s");
    is_int(bm_token_refresh(t, NOW + 723, true, err, sizeof(err)), -1,
           "command backoff: force runs it at once all the same");
    is_int(run_count(path("runs")), 11, "command backoff: ... (run 11)");
    write_str(path("cmdtok"), jwt2, 0600);
    is_int(bm_token_refresh(t, NOW + 782, false, err, sizeof(err)), 0,
           "command backoff: not before 60 s after that failure");
    is_int(bm_token_refresh(t, NOW + 783, false, err, sizeof(err)), 1,
           "command backoff: the next try succeeds");
    unlink(path("cmdtok"));
    is_int(bm_token_refresh(t, NOW + 1140, false, err, sizeof(err)), -1,
           "command backoff: a later failure (the new token due) runs it");
    is_int(bm_token_refresh(t, NOW + 1141, false, err, sizeof(err)), -1,
           "command backoff: ... and 1 s later again: the series started over");
    is_int(run_count(path("runs")), 14, "command backoff: 14 runs in all");
  }
  bm_token_free(t);

  /* A child of the shell holding the pipe: the timeout still bounds the
   * wait, and nothing the command started is left running. */
  snprintf(cmd, sizeof(cmd), "sleep 5 & echo $! > '%s'; wait", path("child.pid"));
  unlink(path("child.pid"));
  c = command_conf(cmd, 0.5, 60);
  t0 = mono();
  t = bm_token_new(&c, NOW, err, sizeof(err));
  took = mono() - t0;
  ok(t == NULL && took < 2, "command: a shell waiting for its child is timed out (%.2f s)",
     took);
  bm_token_free(t);
  {
    char pidbuf[32] = "";
    FILE *f = fopen(path("child.pid"), "r");
    long pid = 0;
    struct timespec nap = {0, 100 * 1000 * 1000};

    if (f) {
      if (fgets(pidbuf, sizeof(pidbuf), f))
        pid = strtol(pidbuf, NULL, 10);
      fclose(f);
    }
    nanosleep(&nap, NULL);
    /* Gone, or a zombie nobody reaped (PID 1 here may not reap). */
    ok(pid > 1 && (kill((pid_t)pid, 0) != 0 || process_state((pid_t)pid) == 'Z'),
       "command: the timed-out command's own child is not left running (pid %ld)", pid);
    if (pid > 1)
      kill((pid_t)pid, SIGKILL); /* the test's own leftover, if any */
  }
}

/*
 * The fingerprint, and no secret in any log line
 */

static void test_fingerprints(void)
{
  char jwt[1024], err[ERRLEN], fp[13];
  const char *p = path("fptok");
  struct bm_token_conf c = file_conf(p);
  static const char *payloads[] = {"{\"a\":1}", "{\"b\":\"x\"}", "{\"exp\":1}"};

  for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
    make_jwt(payloads[i], jwt, sizeof(jwt));
    remember(jwt);
    write_str(p, jwt, 0600);
    bm_token_t *t = bm_token_new(&c, NOW, err, sizeof(err));
    sha256sum12(jwt, fp);
    ok(t && strlen(fp) == 12 && strcmp(bm_token_fingerprint(t), fp) == 0,
       "fingerprint %zu is sha256sum's first 12 hex digits (%s)", i, fp);
    bm_token_free(t);
  }
}

static void test_no_secret_logged(void)
{
  int leaks = 0;

  for (int i = 0; i < logs_n; i++)
    for (int s = 0; s < secrets_n; s++)
      if (has(logs[i].line, secrets[s])) {
        diag("log line %d holds secret %d: level %d", i, s, logs[i].level);
        leaks++;
      }
  ok(logs_total == logs_n, "all %d log lines were captured", logs_total);
  ok(secrets_n > 20, "%d tokens and keys were remembered", secrets_n);
  is_int(leaks, 0, "no log line holds a token or a key");
}

int main(void)
{
  char cmd[600];

  if (mkdtemp(tmpdir) == NULL) {
    ok(0, "mkdtemp: %s", strerror(errno));
    return done_testing();
  }
  diag("keys and scratch files in %s", tmpdir);
  bm_log_set_sink(capture, NULL);

  test_file_read();
  test_file_change();
  test_file_errors();
  test_file_mode();
  test_opaque();
  test_usable();
  test_keygen();
  test_mint_hs256();
  test_mint_rs_es();
  test_command();
  test_fingerprints();
  test_no_secret_logged();

  bm_log_set_sink(NULL, NULL);
  for (int s = 0; s < secrets_n; s++)
    free(secrets[s]);
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
  ok(run(cmd, NULL, 0) == 0, "remove %s", tmpdir);
  return done_testing();
}
