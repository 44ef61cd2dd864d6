/*
 * token.c - see token.h.
 */
#include "token.h"

#include "alloc.h"
#include "clock.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <yajl/yajl_gen.h>

#include "jwt.h"
#include "log.h"
#include "message.h"

#define TOKEN_MAX (BM_MSG_TOKEN_SIZE - 1)
#define HMAC_KEY_MAX 4096

struct bm_token {
  struct bm_token_conf conf;
  char value[BM_MSG_TOKEN_SIZE];
  char print[13];
  bool has_exp, has_nbf;
  int64_t exp, nbf;
  struct stat file_stat; /* kind file: the version read last */
  bool warned_mode;
  int failures;          /* renewals failed in a row (minted, commanded) */
  int64_t retry_at;      /* s: no renewal before, unless forced */
};

/* Warns once per file when group or others may read a secret. */
static void check_mode(bm_token_t *t, const char *what, const char *path,
                       const struct stat *st)
{
  if ((st->st_mode & 077) && !t->warned_mode) {
    BM_WARNING("%s \"%s\" is readable by group or others (mode %04o): "
               "chmod 600 it",
               what, path, (unsigned)(st->st_mode & 07777));
    t->warned_mode = true;
  }
}

/* Trims white space at both ends and checks the characters of a compact
 * JWT (printable ASCII, no spaces).  Returns the length or -1. */
static int token_clean(char *buf, size_t len)
{
  size_t start = 0;

  while (len > 0 && strchr(" \t\r\n", buf[len - 1]))
    buf[--len] = '\0';
  while (start < len && strchr(" \t\r\n", buf[start]))
    start++;
  memmove(buf, buf + start, len - start + 1);
  len -= start;
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)buf[i] < 0x21 || (unsigned char)buf[i] > 0x7e)
      return -1;
  return (int)len;
}

/* Makes `fresh` the token: decodes its claims and fingerprints it.
 * Returns 1 when it differs from the previous one, 0 when not. */
static int token_take(bm_token_t *t, const char *fresh)
{
  struct bm_jwt_claims claims;
  char err[128];
  int changed = strcmp(fresh, t->value) != 0;

  snprintf(t->value, sizeof(t->value), "%s", fresh);
  bm_jwt_fingerprint(t->value, t->print);
  t->has_exp = t->has_nbf = false;
  if (bm_jwt_decode(t->value, &claims, err, sizeof(err)) == 0) {
    t->has_exp = claims.has_exp;
    t->exp = claims.exp;
    t->has_nbf = claims.has_nbf;
    t->nbf = claims.nbf;
  } else if (changed) {
    BM_WARNING("token %s is no JWT this plugin can read (%s): it is sent as "
               "it is, without expiry checks",
               t->print, err);
  }
  return changed;
}

/* ---- file -------------------------------------------------------------- */

static int read_secret_file(bm_token_t *t, const char *what, const char *path,
                            char *buf, size_t cap, size_t *len,
                            struct stat *st, char *err, size_t errlen)
{
  FILE *f = NULL;
  int status = -1;

  if (!(f = fopen(path, "re"))) {
    snprintf(err, errlen, "cannot open %s \"%s\": %s", what, path,
             strerror(errno));
    goto out;
  }
  if (fstat(fileno(f), st) != 0) {
    snprintf(err, errlen, "cannot stat %s \"%s\": %s", what, path,
             strerror(errno));
    goto out;
  }
  *len = fread(buf, 1, cap - 1, f);
  if (ferror(f)) {
    snprintf(err, errlen, "cannot read %s \"%s\"", what, path);
    goto out;
  }
  if (!feof(f) && fgetc(f) != EOF) {
    snprintf(err, errlen, "%s \"%s\" holds more than %zu bytes", what, path,
             cap - 1);
    goto out;
  }
  buf[*len] = '\0';
  check_mode(t, what, path, st);
  status = 0;
out:
  if (f)
    fclose(f);
  return status;
}

static int refresh_file(bm_token_t *t, char *err, size_t errlen)
{
  struct stat st;
  char buf[BM_MSG_TOKEN_SIZE + 1];
  size_t len = 0;
  int n, status = -1;

  if (stat(t->conf.file, &st) != 0) {
    snprintf(err, errlen, "cannot stat TokenFile \"%s\": %s", t->conf.file,
             strerror(errno));
    return -1;
  }
  if (t->value[0] && st.st_mtim.tv_sec == t->file_stat.st_mtim.tv_sec &&
      st.st_mtim.tv_nsec == t->file_stat.st_mtim.tv_nsec &&
      st.st_size == t->file_stat.st_size && st.st_ino == t->file_stat.st_ino)
    return 0;
  if (read_secret_file(t, "TokenFile", t->conf.file, buf, sizeof(buf), &len,
                       &st, err, errlen) != 0)
    goto out;
  if ((n = token_clean(buf, len)) < 0) {
    snprintf(err, errlen, "TokenFile \"%s\" holds a character no JWT has",
             t->conf.file);
    goto out;
  }
  if (n == 0) {
    snprintf(err, errlen, "TokenFile \"%s\" is empty", t->conf.file);
    goto out;
  }
  if (n > TOKEN_MAX) {
    snprintf(err, errlen, "TokenFile \"%s\" holds more than %d bytes",
             t->conf.file, TOKEN_MAX);
    goto out;
  }
  t->file_stat = st;
  status = token_take(t, buf);
out:
  OPENSSL_cleanse(buf, sizeof(buf));
  return status;
}

/* ---- mint -------------------------------------------------------------- */

/* The claims as compact JSON, into out.  Returns 0 or -1. */
static int mint_payload(const bm_token_t *t, int64_t now, char *out,
                        size_t cap)
{
  yajl_gen g = yajl_gen_alloc(NULL);
  const unsigned char *buf;
  size_t len;
  unsigned char rnd[16];
  char jti[33];
  int status = -1;

#define STR(s) yajl_gen_string(g, (const unsigned char *)(s), strlen(s))
  if (!g || RAND_bytes(rnd, sizeof(rnd)) != 1)
    goto out;
  for (size_t i = 0; i < sizeof(rnd); i++)
    snprintf(jti + 2 * i, 3, "%02x", rnd[i]);
  if (yajl_gen_map_open(g) != yajl_gen_status_ok)
    goto out;
  if (t->conf.issuer[0] && (STR("iss") || STR(t->conf.issuer)))
    goto out;
  if (t->conf.subject[0] && (STR("sub") || STR(t->conf.subject)))
    goto out;
  if (t->conf.audience[0] && (STR("aud") || STR(t->conf.audience)))
    goto out;
  for (int i = 0; i < t->conf.n_claims; i++)
    if (STR(t->conf.claims[i].name) || STR(t->conf.claims[i].value))
      goto out;
  if (STR("iat") || yajl_gen_integer(g, now) || STR("nbf") ||
      yajl_gen_integer(g, now) || STR("exp") ||
      yajl_gen_integer(g, now + (int64_t)t->conf.lifetime) || STR("jti") ||
      STR(jti) || yajl_gen_map_close(g))
    goto out;
  if (yajl_gen_get_buf(g, &buf, &len) != yajl_gen_status_ok || len >= cap)
    goto out;
  memcpy(out, buf, len);
  out[len] = '\0';
  status = 0;
#undef STR
out:
  if (g)
    yajl_gen_free(g);
  return status;
}

static int refresh_mint(bm_token_t *t, int64_t now, char *err, size_t errlen)
{
  char payload[4096], token[BM_MSG_TOKEN_SIZE];
  unsigned char key[HMAC_KEY_MAX + 1];
  struct stat st;
  size_t keylen = 0;
  int n = -1, status = -1;

  if (mint_payload(t, now, payload, sizeof(payload)) != 0) {
    snprintf(err, errlen, "cannot build the token's claims (too long?)");
    goto out;
  }
  switch (t->conf.alg) {
  case BM_TOKEN_HS256:
    if (read_secret_file(t, "Token KeyFile", t->conf.file, (char *)key,
                         sizeof(key), &keylen, &st, err, errlen) != 0)
      goto out;
    if (keylen > 0 && key[keylen - 1] == '\n')
      keylen--; /* one newline, as the man page says: every other byte is
                 * the key's, a CR or a second newline too */
    if (keylen < 32) {
      snprintf(err, errlen,
               "Token KeyFile \"%s\" holds %zu bytes: an HS256 key needs at "
               "least 32 (256 bits)",
               t->conf.file, keylen);
      goto out;
    }
    n = bm_jwt_sign_hs256(payload, key, keylen, token, sizeof(token));
    if (n < 0)
      snprintf(err, errlen, "cannot sign an HS256 token with \"%s\"",
               t->conf.file);
    break;
  case BM_TOKEN_RS256:
  case BM_TOKEN_ES256:
    if (stat(t->conf.file, &st) == 0)
      check_mode(t, "Token KeyFile", t->conf.file, &st);
    n = t->conf.alg == BM_TOKEN_RS256
            ? bm_jwt_sign_rs256(payload, t->conf.file, token, sizeof(token),
                                err, errlen)
            : bm_jwt_sign_es256(payload, t->conf.file, token, sizeof(token),
                                err, errlen);
    break;
  }
  if (n < 0)
    goto out;
  status = token_take(t, token);
out:
  OPENSSL_cleanse(key, sizeof(key));
  OPENSSL_cleanse(token, sizeof(token));
  return status;
}

/* ---- command ----------------------------------------------------------- */

/* The command's process group, and the shell itself should it not have
 * made its group yet. */
static void kill_group(pid_t pid)
{
  (void)kill(-pid, SIGKILL);
  (void)kill(pid, SIGKILL);
}

/* Reaps pid, killing its group once the monotonic deadline has passed: a
 * command that closed its output can still run on. Returns 0 when it
 * exited by itself, -1 when it had to be killed. A child reaped elsewhere
 * (SIGCHLD ignored: ECHILD) counts as exited, status 0. */
static int reap_within(pid_t pid, double deadline, int *wstatus)
{
  bool killed = false;

  *wstatus = 0;
  for (;;) {
    pid_t w = waitpid(pid, wstatus, killed ? 0 : WNOHANG);
    struct timespec nap = {0, 5 * 1000 * 1000};

    if (w == pid)
      return killed ? -1 : 0;
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0) {
      *wstatus = 0;
      return killed ? -1 : 0;
    }
    if (!killed && bm_now_mono() >= deadline) {
      kill_group(pid);
      killed = true;
      continue;
    }
    (void)nanosleep(&nap, NULL);
  }
}

static int refresh_command(bm_token_t *t, char *err, size_t errlen)
{
  char buf[BM_MSG_TOKEN_SIZE + 1];
  size_t len = 0;
  int fds[2] = {-1, -1}, wstatus = 0, status = -1, n;
  pid_t pid = -1;
  double deadline;

  if (pipe2(fds, O_CLOEXEC) != 0) {
    snprintf(err, errlen, "TokenCommand: pipe failed: %s", strerror(errno));
    goto out;
  }
  if ((pid = fork()) < 0) {
    snprintf(err, errlen, "TokenCommand: fork failed: %s", strerror(errno));
    goto out;
  }
  if (pid == 0) {
    int null = open("/dev/null", O_RDONLY);
    setpgid(0, 0); /* its own group: a timeout kills whatever it started */
    if (null >= 0)
      dup2(null, STDIN_FILENO);
    dup2(fds[1], STDOUT_FILENO);
    execl("/bin/sh", "sh", "-c", t->conf.command, (char *)NULL);
    _exit(127);
  }
  (void)setpgid(pid, pid); /* so that kill(-pid) finds it either way */
  close(fds[1]);
  fds[1] = -1;

  deadline = bm_now_mono() + t->conf.command_timeout;
  for (;;) {
    struct pollfd p = {fds[0], POLLIN, 0};
    double left = deadline - bm_now_mono();
    ssize_t got;

    if (left <= 0) {
      snprintf(err, errlen, "TokenCommand did not finish within %g s",
               t->conf.command_timeout);
      kill_group(pid);
      goto reap;
    }
    n = poll(&p, 1, (int)(left * 1000) + 1);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      continue;
    got = read(fds[0], buf + len, sizeof(buf) - 1 - len);
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0)
      break;
    len += (size_t)got;
    if (len == sizeof(buf) - 1) {
      snprintf(err, errlen, "TokenCommand printed more than %d bytes",
               TOKEN_MAX);
      kill_group(pid);
      goto reap;
    }
  }
  buf[len] = '\0';
  status = 0;
reap:
  if (reap_within(pid, deadline, &wstatus) != 0 &&
      status == 0) {
    snprintf(err, errlen, "TokenCommand did not exit within %g s (it closed "
             "its output)", t->conf.command_timeout);
    status = -1;
  }
  if (status == 0 && (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0)) {
    snprintf(err, errlen, "TokenCommand failed (%s %d)",
             WIFEXITED(wstatus) ? "exit status" : "signal",
             WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : WTERMSIG(wstatus));
    status = -1;
  }
  if (status == 0) {
    n = token_clean(buf, len);
    if (n <= 0) {
      snprintf(err, errlen, "TokenCommand printed %s",
               n == 0 ? "nothing" : "a character no JWT has");
      status = -1;
    } else {
      status = token_take(t, buf);
    }
  }
out:
  if (fds[0] >= 0)
    close(fds[0]);
  if (fds[1] >= 0)
    close(fds[1]);
  OPENSSL_cleanse(buf, sizeof(buf));
  return status;
}

/* ---- API --------------------------------------------------------------- */

bm_token_t *bm_token_new(const struct bm_token_conf *conf, int64_t now,
                         char *err, size_t errlen)
{
  bm_token_t *t = bm_calloc(1, sizeof(*t));

  if (!t) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  t->conf = *conf;
  if (bm_token_refresh(t, now, true, err, errlen) < 0) {
    bm_token_free(t);
    return NULL;
  }
  return t;
}

void bm_token_free(bm_token_t *t)
{
  if (!t)
    return;
  OPENSSL_cleanse(t, sizeof(*t));
  free(t);
}

int bm_token_refresh(bm_token_t *t, int64_t now, bool force, char *err,
                     size_t errlen)
{
  int rc;

  if (t->conf.kind == BM_TOKEN_FILE)
    return refresh_file(t, err, errlen);
  if (!force && t->value[0] &&
      (!t->has_exp || t->exp > now + (int64_t)t->conf.renew_before))
    return 0;
  /* A renewal that failed is tried again after 1, 2, 4 ... 32 s, then
   * every 60 s: a command hanging until its timeout would otherwise hold
   * the gateway's thread most of the time. */
  if (!force && t->value[0] && now < t->retry_at)
    return 0;
  rc = t->conf.kind == BM_TOKEN_MINT ? refresh_mint(t, now, err, errlen)
                                     : refresh_command(t, err, errlen);
  if (rc < 0) {
    t->failures += t->failures < 7;
    t->retry_at = now + (t->failures < 7 ? (int64_t)1 << (t->failures - 1)
                                         : 60);
  } else {
    t->failures = 0;
    t->retry_at = 0;
  }
  return rc;
}

const char *bm_token_value(const bm_token_t *t) { return t->value; }

const char *bm_token_fingerprint(const bm_token_t *t) { return t->print; }

bool bm_token_expiry(const bm_token_t *t, int64_t *exp)
{
  if (t->has_exp)
    *exp = t->exp;
  return t->has_exp;
}

int bm_token_usable(const bm_token_t *t, int64_t now, int64_t leeway,
                    char *why, size_t whylen)
{
  /* exp and nbf are any int64 a token carried: compared with now moved by
   * the leeway, never moved themselves (no overflow at INT64_MAX). */
  if (t->has_exp && t->exp <= now - leeway) {
    snprintf(why, whylen, "token expired");
    return -1;
  }
  if (t->has_nbf && t->nbf > now + leeway) {
    snprintf(why, whylen, "token not valid before %lld",
             (long long)t->nbf);
    return -1;
  }
  return 0;
}
