/*
 * jwt.c - compact JWS (RFC 7515) decode, sign and verify for RFC 7519 JWTs.
 *
 * Token layout
 *
 *   BASE64URL(header) '.' BASE64URL(payload) '.' BASE64URL(signature)
 *   \___________ JWS signing input ________/
 *
 * The signing input is the token's own prefix up to the second '.', so
 * signing writes header and payload into the caller's buffer and MACs or
 * signs that prefix in place; verifying never copies it either.
 *
 * Validity rule (every token is untrusted input)
 *
 *   - at most BM_JWT_MAX_SIZE bytes before the NUL (strnlen: nothing past
 *     the limit is read), exactly two '.', each part non-empty;
 *   - each part strict base64url (RFC 4648 section 5): alphabet A-Z a-z 0-9
 *     '-' '_' only, no '=' padding, no whitespace, no length of the form
 *     4n+1, and the unused low bits of the last character zero (the
 *     canonical encoding of section 3.5), so one signature has exactly one
 *     spelling;
 *   - header and payload decode to JSON objects that yajl parses strictly:
 *     no comments (yajl_tree_parse turns them on, so a first pass with the
 *     plain parser checks the text), valid UTF-8, no NUL byte anywhere (not
 *     even as "\u0000" inside a string: yajl_tree keeps C strings), nothing
 *     after the value, and no key twice at the top level (RFC 7515 section
 *     5.2 lets a parser either reject duplicates or take the last one; two
 *     parsers disagreeing on "alg" is how confusion attacks start);
 *   - header "alg" a string of 1..15 bytes (never truncated);
 *   - payload exp, nbf, iat when present JSON numbers whose value,
 *     truncated toward zero, fits an int64_t.  The truncation works on the
 *     number's text, digit by digit: exact for any exponent, no rounding
 *     through a double, and no dependence on the locale's decimal point
 *     (strtod stops at the '.' of "1.5" under a German LC_NUMERIC, and
 *     another plugin in the process may have set one).
 *
 * Algorithms (RFC 7518 section 3)
 *
 *   HS256  HMAC-SHA-256, 32-byte tag; keys shorter than 32 bytes (the hash
 *          size, a MUST of section 3.2) are refused for signing and
 *          verifying alike.  The tag is compared with CRYPTO_memcmp.
 *   RS256  RSASSA-PKCS1-v1_5 with SHA-256; RSA keys of 2048 bits or more
 *          (section 3.3); the signature is exactly the modulus size.
 *   ES256  ECDSA P-256 with SHA-256; the JWS signature is R || S, 32 bytes
 *          each, big-endian (section 3.4), converted to and from the DER
 *          ECDSA-Sig-Value that OpenSSL produces and expects.
 *
 * Verification checks the header's alg against the one the caller asked for
 * and the key's type against that alg before any signature math, so a token
 * cannot choose how it is verified ("none", or an RSA public key used as an
 * HMAC secret).
 *
 * PEM keys are read from files on every call (no key cache): a private key
 * protected by a passphrase is refused rather than prompting on a terminal.
 *
 * The module never logs: every failure is a -1 with a one-line reason in
 * err.  Reasons quote nothing a token controls except its alg, shown with
 * non-printable bytes replaced by '?'.  Every entry point that calls OpenSSL
 * brackets its work with ERR_set_mark/ERR_pop_to_mark: it leaves nothing in
 * the per-thread error queue, which other plugins in the process share, and
 * removes nothing that was there before.
 */
#include "jwt.h"

#include <assert.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include <yajl/yajl_parse.h>
#include <yajl/yajl_tree.h>

#define JWT_HS256_SIZE 32      /* HMAC-SHA-256 tag, and the minimum key */
#define JWT_ES256_HALF 32      /* bytes of R, and of S, for P-256 */
#define JWT_RSA_MIN_BITS 2048
#define JWT_ALG_SIZE 16        /* sizeof(struct bm_jwt_claims).alg */
/* No part of a bounded token decodes to more than this many bytes. */
#define JWT_PART_MAX (BM_JWT_MAX_SIZE / 4 * 3)

enum jwt_alg { JWT_HS256, JWT_RS256, JWT_ES256 };

static const char *const jwt_alg_names[] = {"HS256", "RS256", "ES256"};
static const char *const jwt_alg_headers[] = {
    "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
    "{\"alg\":\"RS256\",\"typ\":\"JWT\"}",
    "{\"alg\":\"ES256\",\"typ\":\"JWT\"}",
};

/* The three parts of a token, pointing into it. */
struct jwt_parts {
  const char *header, *payload, *sig;
  size_t header_len, payload_len, sig_len;
  size_t signed_len; /* header '.' payload: the JWS signing input */
};

static void __attribute__((format(printf, 3, 4)))
jwt_err(char *err, size_t errlen, const char *fmt, ...)
{
  va_list ap;
  int n;

  if (err == NULL || errlen == 0)
    return;
  va_start(ap, fmt);
  n = vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  /* A reason may be truncated to the caller's buffer; it is never garbage. */
  if (n < 0)
    err[0] = '\0';
}

/* As jwt_err, followed by OpenSSL's newest error.  The queue itself is
 * left to the caller's ERR_pop_to_mark. */
static void __attribute__((format(printf, 3, 4)))
jwt_err_ossl(char *err, size_t errlen, const char *fmt, ...)
{
  char what[256], reason[160];
  unsigned long e = ERR_peek_last_error();
  va_list ap;

  va_start(ap, fmt);
  if (vsnprintf(what, sizeof(what), fmt, ap) < 0)
    what[0] = '\0';
  va_end(ap);
  if (e != 0)
    ERR_error_string_n(e, reason, sizeof(reason));
  else
    memcpy(reason, "no OpenSSL error", sizeof("no OpenSSL error"));
  jwt_err(err, errlen, "%s: %s", what, reason);
}

/* Copies an untrusted string for a reason: printable ASCII or '?'. */
static void jwt_printable(const char *in, char *out, size_t cap)
{
  size_t i;

  assert(cap > 0);
  for (i = 0; in[i] != '\0' && i + 1 < cap; i++)
    out[i] = (in[i] >= 0x20 && in[i] < 0x7f) ? in[i] : '?';
  out[i] = '\0';
}

/*
 * base64url
 */

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64url_value(unsigned char c)
{
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '-')
    return 62;
  if (c == '_')
    return 63;
  return -1;
}

int bm_base64url_encode(const unsigned char *in, size_t len, char *out,
                        size_t cap)
{
  int status = -1;
  size_t need, i, o = 0;
  uint32_t v;

  /* The result, NUL included, must fit an int. */
  if (len > (size_t)(INT_MAX - 4) / 4 * 3)
    goto out;
  need = len / 3 * 4 + (len % 3 == 0 ? 0 : len % 3 + 1);
  if (out == NULL || cap < need + 1)
    goto out;
  assert(in != NULL || len == 0);

  for (i = 0; i + 3 <= len; i += 3) {
    v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = b64url_alphabet[v >> 18 & 63];
    out[o++] = b64url_alphabet[v >> 12 & 63];
    out[o++] = b64url_alphabet[v >> 6 & 63];
    out[o++] = b64url_alphabet[v & 63];
  }
  if (len - i == 1) {
    v = (uint32_t)in[i] << 16;
    out[o++] = b64url_alphabet[v >> 18 & 63];
    out[o++] = b64url_alphabet[v >> 12 & 63];
  } else if (len - i == 2) {
    v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
    out[o++] = b64url_alphabet[v >> 18 & 63];
    out[o++] = b64url_alphabet[v >> 12 & 63];
    out[o++] = b64url_alphabet[v >> 6 & 63];
  }
  assert(o == need);
  out[o] = '\0';
  status = (int)o;
out:
  return status;
}

int bm_base64url_decode(const char *in, size_t len, unsigned char *out,
                        size_t cap)
{
  int status = -1;
  size_t need, i, o = 0;
  uint32_t acc = 0; /* bits read but not yet written, at most 12 */
  int bits = 0, v;

  /* One character carries 6 bits: 4n+1 characters end in a partial byte. */
  if (len % 4 == 1 || len > (size_t)INT_MAX)
    goto out;
  need = len / 4 * 3 + (len % 4 == 0 ? 0 : len % 4 - 1);
  if (need > cap || (len > 0 && (in == NULL || out == NULL)))
    goto out;

  for (i = 0; i < len; i++) {
    v = b64url_value((unsigned char)in[i]);
    if (v < 0)
      goto out;
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (unsigned char)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  /* Canonical form: the last character's unused bits are zero. */
  if (acc != 0)
    goto out;
  assert(o == need);
  status = (int)o;
out:
  if (status < 0 && o > 0)
    memset(out, 0, o); /* no half-decoded bytes on failure */
  return status;
}

/*
 * JSON
 */

/* First pass state: yajl_tree would silently cut a string at its NUL. */
struct jwt_json_check {
  bool nul_in_string;
};

static int jwt_json_check_string(void *ctx, const unsigned char *s,
                                 size_t len)
{
  struct jwt_json_check *check = ctx;

  if (memchr(s, '\0', len) != NULL) {
    check->nul_in_string = true;
    return 0; /* cancels the parse */
  }
  return 1;
}

static const yajl_callbacks jwt_json_check_callbacks = {
    .yajl_string = jwt_json_check_string,
    .yajl_map_key = jwt_json_check_string,
};

static bool jwt_json_duplicate_key(yajl_val obj)
{
  size_t i, j;

  for (i = 0; i < obj->u.object.len; i++)
    for (j = i + 1; j < obj->u.object.len; j++)
      if (strcmp(obj->u.object.keys[i], obj->u.object.keys[j]) == 0)
        return true;
  return false;
}

/* Parses text[0..len) (text[len] must be NUL) as a strict JSON object into
 * *out, which the caller frees with yajl_tree_free.  `what` names the part
 * in the reason. */
static int jwt_json_object(const char *what, const unsigned char *text,
                           size_t len, yajl_val *out, char *err,
                           size_t errlen)
{
  int status = -1;
  yajl_handle h = NULL;
  yajl_val root = NULL;
  struct jwt_json_check check = {.nul_in_string = false};
  unsigned char *msg;
  size_t msglen;

  assert(text[len] == '\0');
  *out = NULL;
  if (memchr(text, '\0', len) != NULL) {
    jwt_err(err, errlen, "%s has a NUL byte", what);
    goto out;
  }

  /* Pass 1: strict grammar over the exact bytes. */
  h = yajl_alloc(&jwt_json_check_callbacks, NULL, &check);
  if (h == NULL) {
    jwt_err(err, errlen, "%s: out of memory", what);
    goto out;
  }
  if (yajl_config(h, yajl_allow_comments, 0) == 0) {
    jwt_err(err, errlen, "%s: yajl refused its configuration", what);
    goto out;
  }
  if (yajl_parse(h, text, len) != yajl_status_ok ||
      yajl_complete_parse(h) != yajl_status_ok) {
    if (check.nul_in_string) {
      jwt_err(err, errlen, "%s has a NUL in a string", what);
      goto out;
    }
    msg = yajl_get_error(h, 0, NULL, 0);
    if (msg == NULL) {
      jwt_err(err, errlen, "%s is not JSON", what);
      goto out;
    }
    msglen = strcspn((const char *)msg, "\n"); /* yajl ends it with one */
    jwt_err(err, errlen, "%s is not JSON (%.*s)", what,
            (int)(msglen < 100 ? msglen : 100), (const char *)msg);
    yajl_free_error(h, msg);
    goto out;
  }

  /* Pass 2: the tree, from the text pass 1 accepted. */
  root = yajl_tree_parse((const char *)text, NULL, 0);
  if (root == NULL) {
    jwt_err(err, errlen, "%s: yajl_tree_parse failed", what);
    goto out;
  }
  if (!YAJL_IS_OBJECT(root)) {
    jwt_err(err, errlen, "%s is not a JSON object", what);
    goto out;
  }
  if (jwt_json_duplicate_key(root)) {
    jwt_err(err, errlen, "%s has a key twice", what);
    goto out;
  }
  *out = root;
  root = NULL;
  status = 0;
out:
  yajl_tree_free(root);
  if (h != NULL)
    yajl_free(h);
  return status;
}

/* Truncates the JSON number text `raw` toward zero into *out.  Returns -1
 * when the result does not fit an int64_t or raw is not a JSON number.
 * Works on the digits: mantissa m (integer digits then fraction digits) and
 * exponent e keep the first int_digits+e digits of m, padded with zeros. */
static int jwt_json_int64(const char *raw, int64_t *out)
{
  int status = -1;
  const char *p = raw, *int_digits, *frac_digits = "";
  size_t n_int, n_frac = 0, k;
  long exp10 = 0, take;
  bool neg = false, exp_neg = false;
  uint64_t mag = 0, limit;
  unsigned d;

  if (*p == '-') {
    neg = true;
    p++;
  }
  int_digits = p;
  while (*p >= '0' && *p <= '9')
    p++;
  n_int = (size_t)(p - int_digits);
  if (n_int == 0)
    goto out;
  if (*p == '.') {
    frac_digits = ++p;
    while (*p >= '0' && *p <= '9')
      p++;
    n_frac = (size_t)(p - frac_digits);
    if (n_frac == 0)
      goto out;
  }
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '+' || *p == '-') {
      exp_neg = *p == '-';
      p++;
    }
    if (!(*p >= '0' && *p <= '9'))
      goto out;
    /* Saturate: past a million the answer is 0 or an overflow anyway. */
    for (; *p >= '0' && *p <= '9'; p++)
      if (exp10 < 1000000)
        exp10 = exp10 * 10 + (*p - '0');
    if (exp_neg)
      exp10 = -exp10;
  }
  if (*p != '\0' || n_int > JWT_PART_MAX || n_frac > JWT_PART_MAX)
    goto out;

  /* Digits before the decimal point once the exponent is applied; more
   * than 20 zeros of padding overflow any non-zero value, so stop there. */
  take = (long)n_int + exp10;
  if (take > (long)(n_int + n_frac) + 20)
    take = (long)(n_int + n_frac) + 20;
  limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  for (k = 0; take > 0 && k < (size_t)take; k++) {
    if (k < n_int)
      d = (unsigned)(int_digits[k] - '0');
    else if (k - n_int < n_frac)
      d = (unsigned)(frac_digits[k - n_int] - '0');
    else
      d = 0;
    if (mag > (limit - d) / 10)
      goto out;
    mag = mag * 10 + d;
  }
  if (!neg)
    *out = (int64_t)mag;
  else if (mag == (uint64_t)INT64_MAX + 1)
    *out = INT64_MIN;
  else
    *out = -(int64_t)mag;
  status = 0;
out:
  return status;
}

/* Reads the optional NumericDate claim `name` of the payload object. */
static int jwt_claim_date(yajl_val payload, const char *name, bool *has,
                          int64_t *value, char *err, size_t errlen)
{
  int status = -1;
  const char *path[] = {name, NULL};
  yajl_val v = yajl_tree_get(payload, path, yajl_t_any);

  *has = false;
  if (v == NULL) {
    status = 0;
    goto out;
  }
  if (!YAJL_IS_NUMBER(v) || v->u.number.r == NULL) {
    jwt_err(err, errlen, "payload %s is not a number", name);
    goto out;
  }
  if (jwt_json_int64(v->u.number.r, value) != 0) {
    jwt_err(err, errlen, "payload %s is not a 64-bit integer", name);
    goto out;
  }
  *has = true;
  status = 0;
out:
  return status;
}

/* Reads exp, nbf and iat into c. */
static int jwt_claim_dates(yajl_val payload, struct bm_jwt_claims *c,
                           char *err, size_t errlen)
{
  int status = -1;

  if (jwt_claim_date(payload, "exp", &c->has_exp, &c->exp, err, errlen) != 0 ||
      jwt_claim_date(payload, "nbf", &c->has_nbf, &c->nbf, err, errlen) != 0 ||
      jwt_claim_date(payload, "iat", &c->has_iat, &c->iat, err, errlen) != 0)
    goto out;
  status = 0;
out:
  return status;
}

/*
 * Token structure
 */

static int jwt_split(const char *token, struct jwt_parts *p, char *err,
                     size_t errlen)
{
  int status = -1;
  size_t len;
  const char *dot1, *dot2;

  if (token == NULL) {
    jwt_err(err, errlen, "no token");
    goto out;
  }
  len = strnlen(token, BM_JWT_MAX_SIZE + 1);
  if (len > BM_JWT_MAX_SIZE) {
    jwt_err(err, errlen, "token is longer than %d bytes", BM_JWT_MAX_SIZE);
    goto out;
  }
  dot1 = memchr(token, '.', len);
  dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token))
              : NULL;
  if (dot2 == NULL) {
    jwt_err(err, errlen, "token has %s '.', not 2", dot1 ? "one" : "no");
    goto out;
  }
  if (memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL) {
    jwt_err(err, errlen, "token has more than 2 '.'");
    goto out;
  }
  p->header = token;
  p->header_len = (size_t)(dot1 - token);
  p->payload = dot1 + 1;
  p->payload_len = (size_t)(dot2 - p->payload);
  p->sig = dot2 + 1;
  p->sig_len = len - (size_t)(p->sig - token);
  p->signed_len = (size_t)(dot2 - token);
  if (p->header_len == 0 || p->payload_len == 0 || p->sig_len == 0) {
    jwt_err(err, errlen, "token %s part is empty",
            p->header_len == 0 ? "header"
            : p->payload_len == 0 ? "payload"
                                  : "signature");
    goto out;
  }
  status = 0;
out:
  return status;
}

/* Decodes one base64url part into buf (JWT_PART_MAX + 1 bytes) and NUL
 * terminates it; *len gets the decoded size. */
static int jwt_part_decode(const char *what, const char *in, size_t inlen,
                           unsigned char *buf, size_t *len, char *err,
                           size_t errlen)
{
  int status = -1;
  int n = bm_base64url_decode(in, inlen, buf, JWT_PART_MAX);

  if (n < 0) {
    jwt_err(err, errlen, "token %s is not unpadded base64url", what);
    goto out;
  }
  buf[n] = '\0';
  *len = (size_t)n;
  status = 0;
out:
  return status;
}

/* Splits and checks the whole token against the validity rule; fills *p
 * and *claims. */
static int jwt_parse(const char *token, struct jwt_parts *p,
                     struct bm_jwt_claims *claims, char *err, size_t errlen)
{
  int status = -1;
  unsigned char buf[JWT_PART_MAX + 1];
  size_t len;
  yajl_val header = NULL, payload = NULL;
  const char *alg_path[] = {"alg", NULL};
  yajl_val alg;
  struct bm_jwt_claims c;

  memset(&c, 0, sizeof(c));
  if (jwt_split(token, p, err, errlen) != 0)
    goto out;

  if (jwt_part_decode("header", p->header, p->header_len, buf, &len, err,
                      errlen) != 0 ||
      jwt_json_object("header", buf, len, &header, err, errlen) != 0)
    goto out;
  alg = yajl_tree_get(header, alg_path, yajl_t_any);
  if (alg == NULL) {
    jwt_err(err, errlen, "header has no alg");
    goto out;
  }
  if (!YAJL_IS_STRING(alg)) {
    jwt_err(err, errlen, "header alg is not a string");
    goto out;
  }
  len = strlen(alg->u.string);
  if (len == 0 || len >= sizeof(c.alg)) {
    jwt_err(err, errlen, "header alg is %s", len == 0 ? "empty" : "too long");
    goto out;
  }
  memcpy(c.alg, alg->u.string, len + 1);

  if (jwt_part_decode("payload", p->payload, p->payload_len, buf, &len, err,
                      errlen) != 0 ||
      jwt_json_object("payload", buf, len, &payload, err, errlen) != 0 ||
      jwt_claim_dates(payload, &c, err, errlen) != 0)
    goto out;

  /* The signature's bytes depend on the algorithm; here only its form. */
  if (jwt_part_decode("signature", p->sig, p->sig_len, buf, &len, err,
                      errlen) != 0)
    goto out;

  *claims = c;
  status = 0;
out:
  yajl_tree_free(header);
  yajl_tree_free(payload);
  return status;
}

/* jwt_parse, then the header's alg must be `alg`. */
static int jwt_parse_alg(enum jwt_alg alg, const char *token,
                         struct jwt_parts *p, char *err, size_t errlen)
{
  int status = -1;
  struct bm_jwt_claims claims;
  char shown[JWT_ALG_SIZE];

  if (jwt_parse(token, p, &claims, err, errlen) != 0)
    goto out;
  if (strcmp(claims.alg, jwt_alg_names[alg]) != 0) {
    jwt_printable(claims.alg, shown, sizeof(shown));
    jwt_err(err, errlen, "token alg is \"%s\", not %s", shown,
            jwt_alg_names[alg]);
    goto out;
  }
  status = 0;
out:
  return status;
}

int bm_jwt_decode(const char *token, struct bm_jwt_claims *out, char *err,
                  size_t errlen)
{
  int status = -1;
  struct jwt_parts parts;

  jwt_err(err, errlen, "%s", "");
  memset(out, 0, sizeof(*out));
  if (jwt_parse(token, &parts, out, err, errlen) != 0)
    goto out;
  status = 0;
out:
  return status;
}

void bm_jwt_fingerprint(const char *token, char out[13])
{
  static const char hex[] = "0123456789abcdef";
  unsigned char md[SHA256_DIGEST_LENGTH];
  size_t i;

  /* ERR_set_mark's 0 only says the queue was empty (no mark set), and
   * then ERR_pop_to_mark empties it again: right either way. */
  (void)ERR_set_mark();
  if (token == NULL ||
      SHA256((const unsigned char *)token, strlen(token), md) == NULL) {
    /* Not hex, so a log line cannot mistake it for a token's name. */
    memcpy(out, "------------", 13);
    goto out;
  }
  for (i = 0; i < 6; i++) {
    out[2 * i] = hex[md[i] >> 4];
    out[2 * i + 1] = hex[md[i] & 15];
  }
  out[12] = '\0';
out:
  (void)ERR_pop_to_mark();
}

/*
 * Keys and signatures
 */

/* RFC 7518 section 3.2: at least the hash size; HMAC() takes an int. */
static int jwt_hs256_key_check(const unsigned char *key, size_t keylen,
                               char *err, size_t errlen)
{
  int status = -1;

  if (key == NULL || keylen < JWT_HS256_SIZE) {
    jwt_err(err, errlen, "HS256 key is shorter than %d bytes",
            JWT_HS256_SIZE);
    goto out;
  }
  if (keylen > INT_MAX) {
    jwt_err(err, errlen, "HS256 key is longer than %d bytes", INT_MAX);
    goto out;
  }
  status = 0;
out:
  return status;
}

/* OpenSSL's default would prompt on the controlling terminal. */
static int jwt_no_passphrase(char *buf, int size, int rwflag, void *u)
{
  return -1;
}

/* Reads a PEM private key (is_private) or SubjectPublicKeyInfo public key.
 * Returns NULL with a reason. */
static EVP_PKEY *jwt_key_load(const char *path, bool is_private, char *err,
                              size_t errlen)
{
  EVP_PKEY *pkey = NULL;
  BIO *bio = NULL;
  const char *kind = is_private ? "private" : "public";

  if (path == NULL) {
    jwt_err(err, errlen, "no %s key file", kind);
    goto out;
  }
  bio = BIO_new_file(path, "r");
  if (bio == NULL) {
    jwt_err_ossl(err, errlen, "cannot open %s key '%s'", kind, path);
    goto out;
  }
  pkey = is_private
             ? PEM_read_bio_PrivateKey(bio, NULL, jwt_no_passphrase, NULL)
             : PEM_read_bio_PUBKEY(bio, NULL, jwt_no_passphrase, NULL);
  if (pkey == NULL)
    jwt_err_ossl(err, errlen, "cannot read %s key '%s'", kind, path);
out:
  BIO_free(bio);
  return pkey;
}

/* The key must be what `alg` prescribes (RFC 7518 sections 3.3, 3.4). */
static int jwt_key_check(enum jwt_alg alg, EVP_PKEY *pkey, char *err,
                         size_t errlen)
{
  int status = -1;
  char group[64];
  size_t group_len = 0;

  if (alg == JWT_RS256) {
    if (!EVP_PKEY_is_a(pkey, "RSA")) {
      jwt_err(err, errlen, "RS256 needs an RSA key");
      goto out;
    }
    if (EVP_PKEY_get_bits(pkey) < JWT_RSA_MIN_BITS) {
      jwt_err(err, errlen, "RS256 key has %d bits, fewer than %d",
              EVP_PKEY_get_bits(pkey), JWT_RSA_MIN_BITS);
      goto out;
    }
  } else {
    assert(alg == JWT_ES256);
    if (!EVP_PKEY_is_a(pkey, "EC") ||
        EVP_PKEY_get_group_name(pkey, group, sizeof(group), &group_len) != 1 ||
        OBJ_txt2nid(group) != NID_X9_62_prime256v1) {
      jwt_err(err, errlen, "ES256 needs an EC key on P-256");
      goto out;
    }
  }
  status = 0;
out:
  return status;
}

/* DER ECDSA-Sig-Value -> JOSE R || S (64 bytes). */
static int jwt_ecdsa_der_to_raw(const unsigned char *der, size_t der_len,
                                unsigned char *raw)
{
  int status = -1;
  ECDSA_SIG *sig = NULL;
  const unsigned char *p = der;
  const BIGNUM *r, *s;

  if (der_len > LONG_MAX)
    goto out;
  sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
  if (sig == NULL || p != der + der_len)
    goto out;
  ECDSA_SIG_get0(sig, &r, &s);
  if (BN_bn2binpad(r, raw, JWT_ES256_HALF) != JWT_ES256_HALF ||
      BN_bn2binpad(s, raw + JWT_ES256_HALF, JWT_ES256_HALF) != JWT_ES256_HALF)
    goto out;
  status = 0;
out:
  ECDSA_SIG_free(sig);
  return status;
}

/* JOSE R || S (64 bytes) -> DER in *der (OPENSSL_free it); returns the DER
 * length or -1. */
static int jwt_ecdsa_raw_to_der(const unsigned char *raw, unsigned char **der)
{
  int status = -1;
  ECDSA_SIG *sig = NULL;
  BIGNUM *r = NULL, *s = NULL;
  int n;

  *der = NULL;
  sig = ECDSA_SIG_new();
  r = BN_bin2bn(raw, JWT_ES256_HALF, NULL);
  s = BN_bin2bn(raw + JWT_ES256_HALF, JWT_ES256_HALF, NULL);
  if (sig == NULL || r == NULL || s == NULL)
    goto out;
  if (ECDSA_SIG_set0(sig, r, s) != 1)
    goto out;
  r = s = NULL; /* sig owns them now */
  n = i2d_ECDSA_SIG(sig, der);
  if (n <= 0)
    goto out;
  status = n;
out:
  BN_free(r);
  BN_free(s);
  ECDSA_SIG_free(sig);
  return status;
}

/* Starts a SHA-256 sign or verify operation with the padding the alg
 * prescribes.  Returns the context or NULL. */
static EVP_MD_CTX *jwt_digest_init(enum jwt_alg alg, EVP_PKEY *pkey,
                                   bool sign)
{
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  EVP_PKEY_CTX *pctx = NULL;
  int rc;

  if (md == NULL)
    goto out;
  rc = sign ? EVP_DigestSignInit(md, &pctx, EVP_sha256(), NULL, pkey)
            : EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL, pkey);
  if (rc != 1 || (alg == JWT_RS256 && EVP_PKEY_CTX_set_rsa_padding(
                                          pctx, RSA_PKCS1_PADDING) <= 0)) {
    EVP_MD_CTX_free(md);
    md = NULL;
  }
out:
  return md;
}

/* Signs in[0..len) with the private key in key_path; writes the JOSE form
 * of the signature (at most JWT_PART_MAX bytes) into sig. */
static int jwt_sign_pem(enum jwt_alg alg, const char *key_path,
                        const unsigned char *in, size_t len,
                        unsigned char *sig, size_t *sig_len, char *err,
                        size_t errlen)
{
  int status = -1;
  EVP_PKEY *pkey = NULL;
  EVP_MD_CTX *md = NULL;
  unsigned char *der = NULL;
  size_t der_len = 0;

  pkey = jwt_key_load(key_path, true, err, errlen);
  if (pkey == NULL || jwt_key_check(alg, pkey, err, errlen) != 0)
    goto out;
  md = jwt_digest_init(alg, pkey, true);
  if (md == NULL || EVP_DigestSign(md, NULL, &der_len, in, len) != 1) {
    jwt_err_ossl(err, errlen, "cannot start signing");
    goto out;
  }
  der = OPENSSL_malloc(der_len);
  if (der == NULL || EVP_DigestSign(md, der, &der_len, in, len) != 1) {
    jwt_err_ossl(err, errlen, "signing failed");
    goto out;
  }
  if (alg == JWT_ES256) {
    if (jwt_ecdsa_der_to_raw(der, der_len, sig) != 0) {
      jwt_err_ossl(err, errlen, "cannot convert the ECDSA signature");
      goto out;
    }
    *sig_len = 2 * JWT_ES256_HALF;
  } else {
    if (der_len > JWT_PART_MAX) {
      jwt_err(err, errlen, "signature longer than %d bytes", JWT_PART_MAX);
      goto out;
    }
    memcpy(sig, der, der_len); /* RSA signatures are raw already */
    *sig_len = der_len;
  }
  status = 0;
out:
  OPENSSL_free(der);
  EVP_MD_CTX_free(md);
  EVP_PKEY_free(pkey);
  return status;
}

/* Builds the token into out: header for alg, payload_json, signature made
 * with key/keylen (HS256) or the PEM file key_path.  Returns the token's
 * length or -1 with a reason. */
static int jwt_sign(enum jwt_alg alg, const char *payload_json,
                    const unsigned char *key, size_t keylen,
                    const char *key_path, char *out, size_t cap, char *err,
                    size_t errlen)
{
  int status = -1;
  const char *header = jwt_alg_headers[alg];
  size_t payload_len, o = 0;
  yajl_val payload = NULL;
  struct bm_jwt_claims claims;
  unsigned char sig[JWT_PART_MAX];
  size_t sig_len = 0;
  unsigned int mac_len = 0;
  int n;

  (void)ERR_set_mark(); /* see bm_jwt_fingerprint */
  if (out != NULL && cap > 0)
    out[0] = '\0';
  jwt_err(err, errlen, "%s", "");
  if (alg == JWT_HS256 && jwt_hs256_key_check(key, keylen, err, errlen) != 0)
    goto out;
  if (payload_json == NULL) {
    jwt_err(err, errlen, "no payload");
    goto out;
  }
  /* A token that bm_jwt_decode would refuse is never minted. */
  payload_len = strnlen(payload_json, BM_JWT_MAX_SIZE + 1);
  if (payload_len > BM_JWT_MAX_SIZE) {
    jwt_err(err, errlen, "payload is longer than %d bytes", BM_JWT_MAX_SIZE);
    goto out;
  }
  if (jwt_json_object("payload", (const unsigned char *)payload_json,
                      payload_len, &payload, err, errlen) != 0 ||
      jwt_claim_dates(payload, &claims, err, errlen) != 0)
    goto out;

  /* header '.' payload, in place: it is the signing input. */
  n = bm_base64url_encode((const unsigned char *)header, strlen(header), out,
                          cap);
  if (n < 0 || (size_t)n + 1 >= cap)
    goto too_small;
  o = (size_t)n;
  out[o++] = '.';
  n = bm_base64url_encode((const unsigned char *)payload_json, payload_len,
                          out + o, cap - o);
  if (n < 0)
    goto too_small;
  o += (size_t)n;

  if (alg == JWT_HS256) {
    if (HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)out, o,
             sig, &mac_len) == NULL ||
        mac_len != JWT_HS256_SIZE) {
      jwt_err_ossl(err, errlen, "HMAC failed");
      goto out;
    }
    sig_len = mac_len;
  } else if (jwt_sign_pem(alg, key_path, (const unsigned char *)out, o, sig,
                          &sig_len, err, errlen) != 0) {
    goto out;
  }

  if (o + 1 >= cap)
    goto too_small;
  out[o++] = '.';
  n = bm_base64url_encode(sig, sig_len, out + o, cap - o);
  if (n < 0)
    goto too_small;
  o += (size_t)n;
  if (o > BM_JWT_MAX_SIZE) {
    jwt_err(err, errlen, "token would be longer than %d bytes",
            BM_JWT_MAX_SIZE);
    goto out;
  }
  status = (int)o;
  goto out;

too_small:
  jwt_err(err, errlen, "output buffer of %zu bytes is too small", cap);
out:
  if (status < 0 && out != NULL && cap > 0)
    memset(out, 0, o < cap ? o + 1 : cap);
  OPENSSL_cleanse(sig, sizeof(sig));
  yajl_tree_free(payload);
  (void)ERR_pop_to_mark();
  return status;
}

int bm_jwt_sign_hs256(const char *payload_json, const unsigned char *key,
                      size_t keylen, char *out, size_t cap)
{
  return jwt_sign(JWT_HS256, payload_json, key, keylen, NULL, out, cap, NULL,
                  0);
}

int bm_jwt_verify_hs256(const char *token, const unsigned char *key,
                        size_t keylen, char *err, size_t errlen)
{
  int status = -1;
  struct jwt_parts parts;
  unsigned char want[EVP_MAX_MD_SIZE], got[JWT_HS256_SIZE];
  unsigned int want_len = 0;

  (void)ERR_set_mark(); /* see bm_jwt_fingerprint */
  jwt_err(err, errlen, "%s", "");
  if (jwt_hs256_key_check(key, keylen, err, errlen) != 0)
    goto out;
  if (jwt_parse_alg(JWT_HS256, token, &parts, err, errlen) != 0)
    goto out;
  if (bm_base64url_decode(parts.sig, parts.sig_len, got, sizeof(got)) !=
      JWT_HS256_SIZE) {
    jwt_err(err, errlen, "HS256 signature is not %d bytes", JWT_HS256_SIZE);
    goto out;
  }
  if (HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)token,
           parts.signed_len, want, &want_len) == NULL ||
      want_len != JWT_HS256_SIZE) {
    jwt_err_ossl(err, errlen, "HMAC failed");
    goto out;
  }
  if (CRYPTO_memcmp(want, got, JWT_HS256_SIZE) != 0) {
    jwt_err(err, errlen, "HS256 signature does not match");
    goto out;
  }
  status = 0;
out:
  OPENSSL_cleanse(want, sizeof(want));
  (void)ERR_pop_to_mark();
  return status;
}

/*
 * RS256 and ES256 (to be declared in jwt.h: see the end of this file)
 */

static int jwt_verify_pem(enum jwt_alg alg, const char *token,
                          const char *pubkey_path, char *err, size_t errlen)
{
  int status = -1;
  struct jwt_parts parts;
  unsigned char sig[JWT_PART_MAX];
  unsigned char *der = NULL;
  const unsigned char *to_check;
  size_t check_len;
  EVP_PKEY *pkey = NULL;
  EVP_MD_CTX *md = NULL;
  int n, rc;

  (void)ERR_set_mark(); /* see bm_jwt_fingerprint */
  jwt_err(err, errlen, "%s", "");
  if (jwt_parse_alg(alg, token, &parts, err, errlen) != 0)
    goto out;
  pkey = jwt_key_load(pubkey_path, false, err, errlen);
  if (pkey == NULL || jwt_key_check(alg, pkey, err, errlen) != 0)
    goto out;

  n = bm_base64url_decode(parts.sig, parts.sig_len, sig, sizeof(sig));
  if (alg == JWT_ES256) {
    if (n != 2 * JWT_ES256_HALF) {
      jwt_err(err, errlen, "ES256 signature is not %d bytes",
              2 * JWT_ES256_HALF);
      goto out;
    }
    n = jwt_ecdsa_raw_to_der(sig, &der);
    if (n < 0) {
      jwt_err_ossl(err, errlen, "cannot convert the ECDSA signature");
      goto out;
    }
    to_check = der;
  } else {
    if (n != EVP_PKEY_get_size(pkey)) {
      jwt_err(err, errlen, "RS256 signature is not %d bytes",
              EVP_PKEY_get_size(pkey));
      goto out;
    }
    to_check = sig;
  }
  check_len = (size_t)n;

  md = jwt_digest_init(alg, pkey, false);
  if (md == NULL) {
    jwt_err_ossl(err, errlen, "cannot start verifying");
    goto out;
  }
  rc = EVP_DigestVerify(md, to_check, check_len, (const unsigned char *)token,
                        parts.signed_len);
  if (rc != 1) {
    jwt_err(err, errlen, "%s signature does not match", jwt_alg_names[alg]);
    goto out;
  }
  status = 0;
out:
  OPENSSL_free(der);
  EVP_MD_CTX_free(md);
  EVP_PKEY_free(pkey);
  (void)ERR_pop_to_mark();
  return status;
}

int bm_jwt_sign_rs256(const char *payload_json, const char *key_path,
                      char *out, size_t cap, char *err, size_t errlen)
{
  return jwt_sign(JWT_RS256, payload_json, NULL, 0, key_path, out, cap, err,
                  errlen);
}

int bm_jwt_sign_es256(const char *payload_json, const char *key_path,
                      char *out, size_t cap, char *err, size_t errlen)
{
  return jwt_sign(JWT_ES256, payload_json, NULL, 0, key_path, out, cap, err,
                  errlen);
}

int bm_jwt_verify_rs256(const char *token, const char *pubkey_path, char *err,
                        size_t errlen)
{
  return jwt_verify_pem(JWT_RS256, token, pubkey_path, err, errlen);
}

int bm_jwt_verify_es256(const char *token, const char *pubkey_path, char *err,
                        size_t errlen)
{
  return jwt_verify_pem(JWT_ES256, token, pubkey_path, err, errlen);
}
