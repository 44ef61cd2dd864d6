/*
 * jwt_test.c - TAP tests for jwt.c.
 *
 * Known answers come from the RFCs (RFC 4648 section 10, RFC 7515 appendix
 * A.1, RFC 7519 section 3.1).  Everything else bm signs is checked by an
 * independent implementation: the openssl command line (HMAC, RSA and ECDSA
 * signatures, keys generated at test time into a mkdtemp directory) and
 * sha256sum (fingerprints).  ES256 signatures cross between JOSE's R || S
 * and the DER openssl uses through a hand-written DER coder below, so the
 * conversion in jwt.c is not checked against itself.  A missing openssl or
 * sha256sum binary fails the tests, it does not skip them.
 */
#include "jwt.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "tap.h"

/* RFC 7515 appendix A.1, which RFC 7519 section 3.1 repeats. */
#define A1_HEADER "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
#define A1_PAYLOAD                                                            \
  "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNv" \
  "bS9pc19yb290Ijp0cnVlfQ"
#define A1_SIG "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
#define A1_TOKEN A1_HEADER "." A1_PAYLOAD "." A1_SIG
#define A1_JWK_K                                                              \
  "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUu" \
  "TwjAzZr1Z9CAow"
/* printf %s A1_TOKEN | sha256sum | cut -c1-12, computed once. */
#define A1_FINGERPRINT "8d4ef6536dc8"

#define ERRLEN 256

static char tmpdir[] = "/tmp/jwt_test.XXXXXX";
static unsigned char a1_key[64];
static size_t a1_key_len;

/*
 * Helpers
 */

static bool has(const char *s, const char *part)
{
  return s != NULL && strstr(s, part) != NULL;
}

/* b64url(header_json) '.' b64url(payload_json) '.' sig_b64 into out;
 * aborts the program when out is too small (a bug in the test). */
static void make_token(const char *header_json, const char *payload_json,
                       const char *sig_b64, char *out, size_t cap)
{
  int n, m;

  n = bm_base64url_encode((const unsigned char *)header_json,
                          strlen(header_json), out, cap);
  if (n < 0 || (size_t)n + 1 >= cap)
    abort();
  out[n++] = '.';
  m = bm_base64url_encode((const unsigned char *)payload_json,
                          strlen(payload_json), out + n, cap - (size_t)n);
  if (m < 0)
    abort();
  n += m;
  if (sig_b64 != NULL) {
    if ((size_t)n + 1 + strlen(sig_b64) + 1 > cap)
      abort();
    out[n++] = '.';
    memcpy(out + n, sig_b64, strlen(sig_b64) + 1);
  }
}

/* Appends '.' and the base64url HMAC-SHA-256 (libcrypto, not bm) of what
 * out holds so far. */
static void hmac_append(char *out, size_t cap, const unsigned char *key,
                        size_t keylen)
{
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  size_t n = strlen(out);

  if (HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)out, n, mac,
           &mac_len) == NULL ||
      n + 1 >= cap)
    abort();
  out[n++] = '.';
  if (bm_base64url_encode(mac, mac_len, out + n, cap - n) < 0)
    abort();
}

static bool write_file(const char *path, const void *data, size_t len)
{
  FILE *f = fopen(path, "wb");
  bool good;

  if (f == NULL)
    return false;
  good = fwrite(data, 1, len, f) == len;
  return fclose(f) == 0 && good;
}

static bool read_file(const char *path, unsigned char *buf, size_t cap,
                      size_t *len)
{
  FILE *f = fopen(path, "rb");
  bool good;

  if (f == NULL)
    return false;
  *len = fread(buf, 1, cap, f);
  good = !ferror(f) && *len < cap;
  return fclose(f) == 0 && good;
}

/* Runs `cmd` through sh, its stdout into out (up to cap bytes, *outlen).
 * Returns the exit status, or -1. */
static int run(const char *cmd, unsigned char *out, size_t cap,
               size_t *outlen)
{
  FILE *p = popen(cmd, "r");
  unsigned char sink[256];
  size_t n = 0, got;
  int st;

  if (p == NULL)
    return -1;
  for (;;) {
    if (out != NULL && n < cap)
      got = fread(out + n, 1, cap - n, p);
    else
      got = fread(sink, 1, sizeof(sink), p);
    if (got == 0)
      break;
    if (out != NULL && n < cap)
      n += got;
  }
  if (outlen != NULL)
    *outlen = n;
  st = pclose(p);
  if (st == -1 || !WIFEXITED(st))
    return -1;
  return WEXITSTATUS(st);
}

/* snprintf that aborts on truncation: commands must be whole. */
static void __attribute__((format(printf, 3, 4)))
fmt(char *buf, size_t cap, const char *f, ...)
{
  va_list ap;
  int n;

  va_start(ap, f);
  n = vsnprintf(buf, cap, f, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= cap)
    abort();
}

static void hex(const unsigned char *in, size_t len, char *out)
{
  static const char digits[] = "0123456789abcdef";
  size_t i;

  for (i = 0; i < len; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 15];
  }
  out[2 * len] = '\0';
}

/* Hand-written DER for ECDSA-Sig-Value { r INTEGER, s INTEGER } with 32-byte
 * halves: independent of jwt.c's ECDSA_SIG conversion. */
static size_t der_integer(const unsigned char *v, unsigned char *out)
{
  size_t skip = 0, n = 0;

  while (skip < 31 && v[skip] == 0)
    skip++;
  out[n++] = 0x02;
  out[n++] = (unsigned char)(32 - skip + (v[skip] & 0x80 ? 1 : 0));
  if (v[skip] & 0x80)
    out[n++] = 0;
  memcpy(out + n, v + skip, 32 - skip);
  return n + 32 - skip;
}

static size_t raw_to_der(const unsigned char raw[64], unsigned char *der)
{
  size_t n = 2;

  n += der_integer(raw, der + n);
  n += der_integer(raw + 32, der + n);
  der[0] = 0x30;
  der[1] = (unsigned char)(n - 2);
  return n;
}

static bool der_take_integer(const unsigned char **p, const unsigned char *end,
                             unsigned char *v)
{
  size_t len;

  if (end - *p < 2 || (*p)[0] != 0x02)
    return false;
  len = (*p)[1];
  *p += 2;
  if ((size_t)(end - *p) < len || len == 0)
    return false;
  while (len > 32 && **p == 0) {
    (*p)++;
    len--;
  }
  if (len > 32)
    return false;
  memset(v, 0, 32 - len);
  memcpy(v + 32 - len, *p, len);
  *p += len;
  return true;
}

static bool der_to_raw(const unsigned char *der, size_t len,
                       unsigned char raw[64])
{
  const unsigned char *p = der + 2, *end = der + len;

  return len >= 2 && der[0] == 0x30 && der[1] == len - 2 &&
         der_take_integer(&p, end, raw) &&
         der_take_integer(&p, end, raw + 32) && p == end;
}

/* Signature part of a token, decoded. */
static int token_sig(const char *token, unsigned char *sig, size_t cap)
{
  const char *dot = strrchr(token, '.');

  return dot ? bm_base64url_decode(dot + 1, strlen(dot + 1), sig, cap) : -1;
}

/*
 * base64url
 */

static void test_base64url(void)
{
  static const struct {
    const char *plain, *encoded;
  } vectors[] = {
      /* RFC 4648 section 10, without the '=' padding */
      {"", ""},         {"f", "Zg"},         {"fo", "Zm8"},
      {"foo", "Zm9v"},  {"foob", "Zm9vYg"},  {"fooba", "Zm9vYmE"},
      {"foobar", "Zm9vYmFy"},
  };
  static const char *const invalid[] = {
      "Zm+v", "Zm/v", "Zg==", "Zg=", "Zm9v=", "Zm9 v", "Zm9\nv", "Zm9v\x80",
      "Z",    "A",     "Zm9vY", "Zm9vA", "Zm9vYmFyZ", /* 4n+1 */
      "Zh",   "Zm9",   /* non-zero unused bits: not the canonical spelling */
  };
  static const unsigned char dash_underscore[] = {0xfb, 0xff, 0xbf};
  char enc[64];
  unsigned char dec[64];
  size_t i;
  int n;

  for (i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
    n = bm_base64url_encode((const unsigned char *)vectors[i].plain,
                            strlen(vectors[i].plain), enc, sizeof(enc));
    is_int(n, strlen(vectors[i].encoded), "encode \"%s\" length",
           vectors[i].plain);
    is_str(enc, vectors[i].encoded, "encode \"%s\"", vectors[i].plain);
    memset(dec, 0xaa, sizeof(dec));
    n = bm_base64url_decode(vectors[i].encoded, strlen(vectors[i].encoded),
                            dec, sizeof(dec));
    ok(n == (int)strlen(vectors[i].plain) &&
           memcmp(dec, vectors[i].plain, (size_t)n) == 0,
       "decode \"%s\"", vectors[i].encoded);
  }

  /* '+' and '/' of base64 become '-' and '_' */
  n = bm_base64url_encode(dash_underscore, 3, enc, sizeof(enc));
  is_str(enc, "-_-_", "encode fb ff bf uses '-' and '_' (base64: +/+/)");
  n = bm_base64url_decode("-_-_", 4, dec, sizeof(dec));
  ok(n == 3 && memcmp(dec, dash_underscore, 3) == 0, "decode \"-_-_\"");
  n = bm_base64url_encode((const unsigned char *)"\xff\xff\xff", 3, enc,
                          sizeof(enc));
  is_str(enc, "____", "encode ff ff ff");
  n = bm_base64url_encode((const unsigned char *)"\xfb\xef\xbe", 3, enc,
                          sizeof(enc));
  is_str(enc, "----", "encode fb ef be");

  for (i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
    char shown[16];
    size_t k;

    for (k = 0; invalid[i][k] != '\0' && k + 1 < sizeof(shown); k++)
      shown[k] = (invalid[i][k] >= 0x21 && invalid[i][k] < 0x7f)
                     ? invalid[i][k]
                     : '?';
    shown[k] = '\0';
    is_int(bm_base64url_decode(invalid[i], strlen(invalid[i]), dec,
                               sizeof(dec)),
           -1, "decode refuses \"%s\"", shown);
  }
  is_int(bm_base64url_decode("Zm\0v", 4, dec, sizeof(dec)), -1,
         "decode refuses a NUL inside the length");

  /* cap */
  memset(dec, 0xaa, sizeof(dec));
  is_int(bm_base64url_decode("Zm9v", 4, dec, 2), -1,
         "decode: cap 2 for 3 bytes is too small");
  ok(dec[0] == 0xaa && dec[1] == 0xaa, "decode wrote nothing when too small");
  is_int(bm_base64url_decode("Zm9v", 4, dec, 3), 3, "decode: cap 3 is enough");
  ok(dec[3] == 0xaa, "decode wrote no byte past the 3 it returned");
  is_int(bm_base64url_decode("", 0, NULL, 0), 0, "decode of nothing is 0");
  is_int(bm_base64url_encode((const unsigned char *)"foo", 3, enc, 4), -1,
         "encode: cap 4 for \"Zm9v\" and NUL is too small");
  is_int(bm_base64url_encode((const unsigned char *)"foo", 3, enc, 5), 4,
         "encode: cap 5 is enough");
  is_int(bm_base64url_encode((const unsigned char *)"", 0, enc, 0), -1,
         "encode: cap 0 has no room for the NUL");

  /* every length 0..45 of every byte value round-trips */
  {
    unsigned char in[46];
    bool all = true;
    size_t len;

    for (len = 0; len <= sizeof(in); len++) {
      for (i = 0; i < len; i++)
        in[i] = (unsigned char)(i * 97 + len * 31 + 255);
      n = bm_base64url_encode(in, len, enc, sizeof(enc));
      if (n < 0 || strcspn(enc, "=+/") != (size_t)n ||
          bm_base64url_decode(enc, (size_t)n, dec, sizeof(dec)) !=
              (int)len ||
          memcmp(dec, in, len) != 0)
        all = false;
    }
    ok(all, "lengths 0..46 round-trip, no '=', '+' or '/'");
  }
}

/*
 * RFC 7515 A.1 / RFC 7519 3.1
 */

static void test_rfc_examples(void)
{
  struct bm_jwt_claims c;
  char err[ERRLEN], tok[512];
  int n;

  n = bm_base64url_decode(A1_JWK_K, strlen(A1_JWK_K), a1_key,
                          sizeof(a1_key));
  is_int(n, 64, "RFC 7515 A.1 JWK k decodes to 64 bytes");
  a1_key_len = n > 0 ? (size_t)n : 0;
  ok(a1_key[0] == 0x03 && a1_key[63] == 0xa3, "JWK k first and last bytes");

  is_int(bm_jwt_verify_hs256(A1_TOKEN, a1_key, a1_key_len, err, sizeof(err)),
         0, "RFC 7515 A.1 verifies");
  diag("err after success: \"%s\"", err);

  /* first signature char: 'd' -> 'e' keeps it canonical, so it is the MAC
   * compare that fails */
  fmt(tok, sizeof(tok), "%s", A1_TOKEN);
  tok[strlen(A1_HEADER) + 1 + strlen(A1_PAYLOAD) + 1] = 'e';
  is_int(bm_jwt_verify_hs256(tok, a1_key, a1_key_len, err, sizeof(err)), -1,
         "A.1 with one signature char flipped fails");
  ok(has(err, "does not match"), "... because the signature does not match");

  /* last signature char 'k' -> 'l': same bytes in a non-canonical spelling */
  fmt(tok, sizeof(tok), "%s", A1_TOKEN);
  tok[strlen(tok) - 1] = 'l';
  is_int(bm_jwt_verify_hs256(tok, a1_key, a1_key_len, err, sizeof(err)), -1,
         "A.1 with non-canonical last signature char fails");

  fmt(tok, sizeof(tok), "%s", A1_TOKEN);
  tok[strlen(A1_HEADER) + 1 + 10] ^= 0x01;
  is_int(bm_jwt_verify_hs256(tok, a1_key, a1_key_len, err, sizeof(err)), -1,
         "A.1 with one payload char flipped fails");

  /* a different but valid payload under A.1's signature */
  make_token("{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}",
             "{\"iss\":\"joe\",\r\n \"exp\":1300819381,\r\n "
             "\"http://example.com/is_root\":true}",
             A1_SIG, tok, sizeof(tok));
  ok(strncmp(tok, A1_HEADER ".", strlen(A1_HEADER) + 1) == 0,
     "make_token rebuilds A.1's header");
  is_int(bm_jwt_verify_hs256(tok, a1_key, a1_key_len, err, sizeof(err)), -1,
         "A.1 with exp + 1 fails");
  ok(has(err, "does not match"), "... on the MAC: \"%s\"", err);

  a1_key[5] ^= 1;
  is_int(bm_jwt_verify_hs256(A1_TOKEN, a1_key, a1_key_len, err, sizeof(err)),
         -1, "A.1 with one key bit flipped fails");
  a1_key[5] ^= 1;

  memset(&c, 0xff, sizeof(c));
  is_int(bm_jwt_decode(A1_TOKEN, &c, err, sizeof(err)), 0,
         "RFC 7519 3.1 example decodes");
  is_str(c.alg, "HS256", "alg is HS256");
  ok(c.has_exp, "has exp");
  is_int(c.exp, 1300819380, "exp");
  ok(!c.has_nbf && !c.has_iat, "no nbf, no iat");
}

/*
 * Decode errors
 */

static void decode_fails(const char *token, const char *why,
                         const char *want_in_err)
{
  struct bm_jwt_claims c;
  char err[ERRLEN];

  err[0] = '\0';
  is_int(bm_jwt_decode(token, &c, err, sizeof(err)), -1, "decode refuses %s",
         why);
  if (!ok(err[0] != '\0' && has(err, want_in_err), "... err names it (%s)",
          want_in_err))
    diag("err: \"%s\"", err);
}

static void decode_fails_json(const char *header, const char *payload,
                              const char *why, const char *want_in_err)
{
  char tok[1024];

  make_token(header, payload, "AAAA", tok, sizeof(tok));
  decode_fails(tok, why, want_in_err);
}

static void test_decode_errors(void)
{
  static const char hs[] = "{\"alg\":\"HS256\"}";
  char *big;
  char tok[512], err[ERRLEN];
  struct bm_jwt_claims c;
  size_t pad, len = 0;
  int n;

  decode_fails("", "an empty token", "'.'");
  decode_fails(A1_HEADER "." A1_PAYLOAD, "one dot", "one '.'");
  decode_fails(A1_TOKEN ".", "three dots", "more than 2");
  decode_fails(A1_TOKEN ".AAAA", "four parts", "more than 2");
  decode_fails(".." , "three empty parts", "empty");
  decode_fails("." A1_PAYLOAD "." A1_SIG, "an empty header", "header part");
  decode_fails(A1_HEADER ".." A1_SIG, "an empty payload", "payload part");
  decode_fails(A1_HEADER "." A1_PAYLOAD ".", "an empty signature",
               "signature part");
  decode_fails(A1_HEADER "=." A1_PAYLOAD "." A1_SIG, "a padded header",
               "header is not");
  decode_fails(A1_HEADER "." A1_PAYLOAD "." A1_SIG "=", "a padded signature",
               "signature is not");
  decode_fails(A1_HEADER " ." A1_PAYLOAD "." A1_SIG, "a space", "base64url");
  decode_fails("\x01\x80\xff.\x7f\x10.\xfe", "garbage bytes", "base64url");
  decode_fails("Zm9vY.Zm9v.Zm9v", "a 4n+1 header", "base64url");

  decode_fails_json("not json", "{}", "a header that is not JSON",
                    "header is not JSON");
  decode_fails_json(hs, "{\"exp\":1", "a truncated payload",
                    "payload is not JSON");
  decode_fails_json(hs, "[1,2]", "a payload that is a JSON array",
                    "payload is not a JSON object");
  decode_fails_json(hs, "\"x\"", "a payload that is a JSON string",
                    "not a JSON object");
  decode_fails_json("[\"HS256\"]", "{}", "a header that is an array",
                    "header is not a JSON object");
  decode_fails_json("{\"typ\":\"JWT\"}", "{}", "a header without alg",
                    "no alg");
  decode_fails_json("{\"alg\":5}", "{}", "alg 5", "alg is not a string");
  decode_fails_json("{\"alg\":null}", "{}", "alg null", "not a string");
  decode_fails_json("{\"alg\":[\"HS256\"]}", "{}", "alg array",
                    "not a string");
  decode_fails_json("{\"alg\":\"\"}", "{}", "an empty alg", "alg is empty");
  decode_fails_json("{\"alg\":\"0123456789abcdef\"}", "{}",
                    "a 16-byte alg (never truncated)", "too long");
  decode_fails_json("{\"alg\":\"HS256\\u0000x\"}", "{}",
                    "a NUL escaped in alg", "NUL");
  decode_fails_json(hs, "{\"exp\":\"1300819380\"}", "exp as a string",
                    "exp is not a number");
  decode_fails_json(hs, "{\"nbf\":true}", "nbf true", "nbf is not a number");
  decode_fails_json(hs, "{\"iat\":null}", "iat null", "iat is not a number");
  decode_fails_json(hs, "{\"exp\":[1]}", "exp array", "exp is not a number");
  decode_fails_json(hs, "{\"exp\":NaN}", "exp NaN", "payload is not JSON");
  decode_fails_json(hs, "{\"exp\":Infinity}", "exp Infinity",
                    "payload is not JSON");
  decode_fails_json(hs, "{\"exp\":01}", "exp with a leading zero",
                    "payload is not JSON");
  decode_fails_json("{\"alg\":\"HS256\",\"alg\":\"none\"}", "{}",
                    "alg twice", "key twice");
  decode_fails_json(hs, "{\"exp\":1,\"exp\":2}", "exp twice", "key twice");
  decode_fails_json("{\"alg\":\"HS256\"/* hi */}", "{}",
                    "a comment (yajl_tree would allow it)",
                    "header is not JSON");
  decode_fails_json(hs, "{} {}", "two objects", "payload is not JSON");
  decode_fails_json(hs, "{}x", "trailing garbage", "payload is not JSON");
  decode_fails_json(hs, "{\"a\":\"\xc3\x28\"}", "invalid UTF-8",
                    "payload is not JSON");
  decode_fails_json(hs, "{\"a\":\"\x01\"}", "a raw control char in a string",
                    "payload is not JSON");
  decode_fails_json(hs, "", "an empty payload JSON", "payload part");

  /* NUL bytes inside the decoded JSON, where yajl_tree_parse would stop */
  {
    static const unsigned char nul_payload[] = "{}\0{\"exp\":\"x\"}";
    char part[64];

    n = bm_base64url_encode(nul_payload, sizeof(nul_payload) - 1, part,
                            sizeof(part));
    ok(n > 0, "encode a payload with a NUL");
    fmt(tok, sizeof(tok), "eyJhbGciOiJIUzI1NiJ9.%s.AAAA", part);
    decode_fails(tok, "a NUL byte after the payload object", "NUL byte");
  }

  /* deep nesting: yajl and yajl_tree_free recurse, within the size cap */
  {
    char *deep = malloc(BM_JWT_MAX_SIZE), *t = malloc(BM_JWT_MAX_SIZE * 2);
    size_t depth = 3000, k;

    if (deep == NULL || t == NULL)
      abort();
    memcpy(deep, "{\"a\":", 5);
    for (k = 0; k < depth; k++) {
      deep[5 + k] = '[';
      deep[5 + depth + k] = ']';
    }
    memcpy(deep + 5 + 2 * depth, "}", 2);
    make_token(hs, deep, "AAAA", t, BM_JWT_MAX_SIZE * 2);
    is_int(bm_jwt_decode(t, &c, err, sizeof(err)), 0,
           "3000 nested arrays decode (%zu bytes)", strlen(t));
    deep[5 + 2 * depth] = '\0';
    make_token(hs, deep + 5, "AAAA", t, BM_JWT_MAX_SIZE * 2);
    decode_fails(t, "3000 nested arrays as the payload",
                 "payload is not a JSON object");
    free(deep);
    free(t);
  }

  /* 8192 bytes decode, 8193 do not */
  big = malloc(BM_JWT_MAX_SIZE + 64);
  if (big == NULL)
    abort();
  for (pad = 6000; pad < 6200; pad++) {
    char *payload = malloc(pad + 16);

    if (payload == NULL)
      abort();
    memset(payload, 'x', pad + 16);
    memcpy(payload, "{\"p\":\"", 6);
    memcpy(payload + 6 + pad, "\"}", 3);
    make_token(hs, payload, "AAAA", big, BM_JWT_MAX_SIZE + 64);
    free(payload);
    len = strlen(big);
    if (len == BM_JWT_MAX_SIZE)
      break;
  }
  is_int(len, BM_JWT_MAX_SIZE, "built a token of exactly BM_JWT_MAX_SIZE");
  is_int(bm_jwt_decode(big, &c, err, sizeof(err)), 0,
         "a token of exactly %d bytes decodes", BM_JWT_MAX_SIZE);
  memcpy(big + len, "AAAA", 5); /* 4 more signature chars */
  decode_fails(big, "a token longer than BM_JWT_MAX_SIZE", "longer than");
  memset(big, 'A', BM_JWT_MAX_SIZE + 63);
  big[BM_JWT_MAX_SIZE + 63] = '\0';
  decode_fails(big, "8255 bytes without a dot", "longer than");
  free(big);

  /* err: NULL, zero and tiny lengths */
  is_int(bm_jwt_decode("x", &c, NULL, 0), -1, "decode with err NULL");
  memset(err, 'z', sizeof(err));
  is_int(bm_jwt_decode("x", &c, err, 0), -1, "decode with errlen 0");
  ok(err[0] == 'z', "errlen 0: err untouched");
  is_int(bm_jwt_decode("x", &c, err, 6), -1, "decode with errlen 6");
  ok(strlen(err) == 5, "errlen 6: a 5-char truncated reason");
  is_int(bm_jwt_decode(NULL, &c, err, sizeof(err)), -1, "decode NULL");

  /* a failed decode leaves no claims */
  memset(&c, 0xff, sizeof(c));
  make_token(hs, "{\"exp\":1,\"nbf\":\"x\"}", "AAAA", tok, sizeof(tok));
  is_int(bm_jwt_decode(tok, &c, err, sizeof(err)), -1, "bad nbf after exp");
  ok(!c.has_exp && c.exp == 0 && c.alg[0] == '\0',
     "... and out is zeroed, not half filled");
}

/*
 * NumericDate
 */

static void date_is(const char *payload, int64_t want)
{
  struct bm_jwt_claims c;
  char tok[512], err[ERRLEN];

  make_token("{\"alg\":\"HS256\"}", payload, "AAAA", tok, sizeof(tok));
  err[0] = '\0';
  if (!ok(bm_jwt_decode(tok, &c, err, sizeof(err)) == 0 && c.has_exp &&
              c.exp == want,
          "%s: exp %" PRId64, payload, want))
    diag("err \"%s\", has_exp %d, exp %" PRId64, err, c.has_exp, c.exp);
}

static void date_fails(const char *payload)
{
  char tok[512];

  make_token("{\"alg\":\"HS256\"}", payload, "AAAA", tok, sizeof(tok));
  decode_fails(tok, payload, "exp is not a 64-bit integer");
}

static void test_numeric_dates(void)
{
  struct bm_jwt_claims c;
  char tok[512], err[ERRLEN];

  date_is("{\"exp\":1300819380}", 1300819380);
  date_is("{\"exp\":1300819380.75}", 1300819380);
  date_is("{\"exp\":1300819380.999999999999999999}", 1300819380);
  date_is("{\"exp\":-1.5}", -1);
  date_is("{\"exp\":-0.5}", 0);
  date_is("{\"exp\":-0}", 0);
  date_is("{\"exp\":0}", 0);
  date_is("{\"exp\":1.3008193807e9}", 1300819380);
  date_is("{\"exp\":13008193807E-1}", 1300819380);
  date_is("{\"exp\":1300819380e+0}", 1300819380);
  date_is("{\"exp\":0.000001e7}", 10);
  date_is("{\"exp\":5e-1}", 0);
  date_is("{\"exp\":1e-999999999999}", 0);
  date_is("{\"exp\":0e999999999999}", 0);
  date_is("{\"exp\":9223372036854775807}", INT64_MAX);
  date_is("{\"exp\":9223372036854775807.9}", INT64_MAX);
  date_is("{\"exp\":-9223372036854775808}", INT64_MIN);
  date_is("{\"exp\":-9223372036854775808.9}", INT64_MIN);
  date_is("{\"exp\":9.223372036854775807e18}", INT64_MAX);
  date_fails("{\"exp\":9223372036854775808}");
  date_fails("{\"exp\":-9223372036854775809}");
  date_fails("{\"exp\":99999999999999999999999}");
  date_fails("{\"exp\":1e19}");
  date_fails("{\"exp\":-1e19}");
  date_fails("{\"exp\":1e300}");
  date_fails("{\"exp\":1E400}");
  date_fails("{\"exp\":1e999999999999}");

  make_token("{\"alg\":\"HS256\"}", "{\"nbf\":5,\"iat\":-6.9,\"x\":[1e999]}",
             "AAAA", tok, sizeof(tok));
  ok(bm_jwt_decode(tok, &c, err, sizeof(err)) == 0 && !c.has_exp &&
         c.has_nbf && c.nbf == 5 && c.has_iat && c.iat == -6,
     "nbf 5, iat -6.9 -> -6, no exp; other members are not read");
}

/*
 * HS256 sign and verify
 */

static void test_hs256(void)
{
  static const unsigned char key1[32] = "0123456789abcdef0123456789abcdef";
  static const unsigned char key2[32] = "0123456789abcdef0123456789abcdeF";
  static const char payload[] = "{\"sub\":\"relay\",\"exp\":1900000000}";
  struct bm_jwt_claims c;
  char tok[1024], tok2[1024], err[ERRLEN];
  int n;

  n = bm_jwt_sign_hs256(payload, key1, sizeof(key1), tok, sizeof(tok));
  ok(n > 0 && (size_t)n == strlen(tok), "sign returns the token length %d",
     n);
  ok(strncmp(tok, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.", 37) == 0,
     "header is {\"alg\":\"HS256\",\"typ\":\"JWT\"}");
  is_int(bm_jwt_verify_hs256(tok, key1, sizeof(key1), err, sizeof(err)), 0,
         "sign then verify");
  is_int(bm_jwt_decode(tok, &c, err, sizeof(err)), 0, "signed token decodes");
  ok(c.has_exp && c.exp == 1900000000 && strcmp(c.alg, "HS256") == 0,
     "... with its exp and alg");
  is_int(bm_jwt_verify_hs256(tok, key2, sizeof(key2), err, sizeof(err)), -1,
         "verify with a different key fails");
  ok(has(err, "does not match"), "... on the MAC");

  /* keys */
  is_int(bm_jwt_sign_hs256(payload, key1, 31, tok2, sizeof(tok2)), -1,
         "sign refuses a 31-byte key");
  ok(tok2[0] == '\0', "... and leaves out empty");
  is_int(bm_jwt_sign_hs256(payload, NULL, 0, tok2, sizeof(tok2)), -1,
         "sign refuses no key");
  is_int(bm_jwt_verify_hs256(tok, key1, 31, err, sizeof(err)), -1,
         "verify refuses a 31-byte key");
  ok(has(err, "shorter than 32"), "... saying so");
  ok(bm_jwt_sign_hs256(payload, a1_key, a1_key_len, tok2, sizeof(tok2)) > 0 &&
         bm_jwt_verify_hs256(tok2, a1_key, a1_key_len, err, sizeof(err)) == 0,
     "a 64-byte key signs and verifies");

  /* payloads */
  is_int(bm_jwt_sign_hs256("[1]", key1, sizeof(key1), tok2, sizeof(tok2)), -1,
         "sign refuses a JSON array payload");
  is_int(bm_jwt_sign_hs256("{\"a\":", key1, sizeof(key1), tok2, sizeof(tok2)),
         -1, "sign refuses invalid JSON");
  is_int(bm_jwt_sign_hs256("{\"exp\":\"x\"}", key1, sizeof(key1), tok2,
                           sizeof(tok2)),
         -1, "sign refuses an exp that decode would refuse");
  is_int(bm_jwt_sign_hs256("{\"a\":1,\"a\":2}", key1, sizeof(key1), tok2,
                           sizeof(tok2)),
         -1, "sign refuses a key twice");
  is_int(bm_jwt_sign_hs256(NULL, key1, sizeof(key1), tok2, sizeof(tok2)), -1,
         "sign refuses a NULL payload");

  /* cap */
  is_int(bm_jwt_sign_hs256(payload, key1, sizeof(key1), tok2, (size_t)n), -1,
         "cap of the length without NUL is too small");
  ok(tok2[0] == '\0', "... out is empty");
  is_int(bm_jwt_sign_hs256(payload, key1, sizeof(key1), tok2, (size_t)n + 1),
         n, "cap of length + 1 is enough");
  is_str(tok2, tok, "HS256 is deterministic");
  is_int(bm_jwt_sign_hs256(payload, key1, sizeof(key1), NULL, 0), -1,
         "NULL out");

  /* the largest token */
  {
    char *big = malloc(BM_JWT_MAX_SIZE + 100), *p = malloc(BM_JWT_MAX_SIZE);
    size_t pad;
    int last = 0;

    if (big == NULL || p == NULL)
      abort();
    for (pad = 6000; pad < 6200; pad++) {
      memset(p, 'y', pad + 8);
      memcpy(p, "{\"p\":\"", 6);
      memcpy(p + 6 + pad, "\"}", 3);
      last = bm_jwt_sign_hs256(p, key1, sizeof(key1), big,
                               BM_JWT_MAX_SIZE + 100);
      if (last < 0 || last == BM_JWT_MAX_SIZE)
        break;
    }
    is_int(last, BM_JWT_MAX_SIZE, "sign makes a token of exactly %d bytes",
           BM_JWT_MAX_SIZE);
    is_int(bm_jwt_verify_hs256(big, key1, sizeof(key1), err, sizeof(err)), 0,
           "... which verifies");
    memset(p, 'y', pad + 9);
    memcpy(p, "{\"p\":\"", 6);
    memcpy(p + 7 + pad, "\"}", 3);
    is_int(bm_jwt_sign_hs256(p, key1, sizeof(key1), big,
                             BM_JWT_MAX_SIZE + 100),
           -1, "one more payload byte: sign refuses");
    free(big);
    free(p);
  }

  /* headers that do not say HS256, with a valid HMAC */
  make_token("{\"alg\":\"none\",\"typ\":\"JWT\"}", payload, NULL, tok2,
             sizeof(tok2));
  hmac_append(tok2, sizeof(tok2), key1, sizeof(key1));
  is_int(bm_jwt_verify_hs256(tok2, key1, sizeof(key1), err, sizeof(err)), -1,
         "alg none with a valid HMAC fails");
  ok(has(err, "\"none\", not HS256"), "... err: %s", err);
  make_token("{\"alg\":\"none\"}", payload, NULL, tok2, sizeof(tok2));
  strcat(tok2, ".");
  is_int(bm_jwt_verify_hs256(tok2, key1, sizeof(key1), err, sizeof(err)), -1,
         "alg none with an empty signature fails");
  make_token("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", payload, NULL, tok2,
             sizeof(tok2));
  hmac_append(tok2, sizeof(tok2), key1, sizeof(key1));
  is_int(bm_jwt_verify_hs256(tok2, key1, sizeof(key1), err, sizeof(err)), -1,
         "alg RS256 with a valid HMAC fails");
  make_token("{\"alg\":\"hs256\"}", payload, NULL, tok2, sizeof(tok2));
  hmac_append(tok2, sizeof(tok2), key1, sizeof(key1));
  is_int(bm_jwt_verify_hs256(tok2, key1, sizeof(key1), err, sizeof(err)), -1,
         "alg hs256 (case) fails");
  make_token("{\"alg\":\"HS\\n256\"}", payload, NULL, tok2, sizeof(tok2));
  hmac_append(tok2, sizeof(tok2), key1, sizeof(key1));
  is_int(bm_jwt_verify_hs256(tok2, key1, sizeof(key1), err, sizeof(err)), -1,
         "alg with a newline fails");
  ok(has(err, "\"HS?256\"") && strchr(err, '\n') == NULL,
     "... and err shows it without the newline: %s", err);

  /* a valid HMAC over a token bm would not decode */
  make_token("{\"alg\":\"HS256\"}", "{\"exp\":\"soon\"}", NULL, tok2,
             sizeof(tok2));
  hmac_append(tok2, sizeof(tok2), key1, sizeof(key1));
  is_int(bm_jwt_verify_hs256(tok2, key1, sizeof(key1), err, sizeof(err)), -1,
         "verify applies the decode rule even when the MAC matches");

  /* signature length */
  make_token("{\"alg\":\"HS256\"}", payload, "AAAA", tok2, sizeof(tok2));
  is_int(bm_jwt_verify_hs256(tok2, key1, sizeof(key1), err, sizeof(err)), -1,
         "a 3-byte signature fails");
  ok(has(err, "not 32 bytes"), "... as too short");
}

/*
 * openssl and sha256sum as independent implementations
 */

static void test_tools_present(void)
{
  ok(run("command -v openssl >/dev/null 2>&1", NULL, 0, NULL) == 0,
     "the openssl command line tool is installed");
  ok(run("command -v sha256sum >/dev/null 2>&1", NULL, 0, NULL) == 0,
     "sha256sum is installed");
}

static void test_openssl_hmac(void)
{
  static const unsigned char key[40] =
      "\x00\x01\x02\xfe\xff tool-check key, 40 bytes long...";
  static const char payload[] = "{\"iss\":\"bimetri\",\"exp\":1700000000}";
  char tok[1024], path[256], cmd[1024], keyhex[2 * sizeof(key) + 1];
  char want[64];
  unsigned char mac[64];
  size_t mac_len = 0;
  const char *sig;
  int n;

  n = bm_jwt_sign_hs256(payload, key, sizeof(key), tok, sizeof(tok));
  ok(n > 0, "sign for the openssl HMAC check");
  sig = strrchr(tok, '.');
  fmt(path, sizeof(path), "%s/hs256.in", tmpdir);
  ok(sig != NULL && write_file(path, tok, (size_t)(sig - tok)),
     "write the signing input");
  hex(key, sizeof(key), keyhex);
  fmt(cmd, sizeof(cmd),
      "openssl dgst -sha256 -mac HMAC -macopt hexkey:%s -binary < %s", keyhex,
      path);
  is_int(run(cmd, mac, sizeof(mac), &mac_len), 0, "openssl dgst -mac HMAC");
  is_int(mac_len, 32, "openssl gave 32 bytes");
  n = bm_base64url_encode(mac, mac_len, want, sizeof(want));
  ok(n > 0 && sig != NULL, "base64url of openssl's HMAC");
  is_str(sig ? sig + 1 : NULL, want, "bm's HS256 signature equals openssl's");
}

static void test_fingerprint(void)
{
  char fp[13], fp2[13], cmd[1024], tok[512];
  unsigned char out[128];
  size_t len = 0, i;
  bool lower_hex = true;

  memset(fp, 'z', sizeof(fp));
  bm_jwt_fingerprint(A1_TOKEN, fp);
  is_str(fp, A1_FINGERPRINT, "A.1 fingerprint equals sha256sum's");
  for (i = 0; i < 12; i++)
    if (!((fp[i] >= '0' && fp[i] <= '9') || (fp[i] >= 'a' && fp[i] <= 'f')))
      lower_hex = false;
  ok(lower_hex && fp[12] == '\0', "12 lowercase hex digits and a NUL");

  fmt(tok, sizeof(tok), "%s", A1_TOKEN);
  tok[0] = 'f';
  bm_jwt_fingerprint(tok, fp2);
  ok(strcmp(fp, fp2) != 0, "a one-char different token has another: %s",
     fp2);

  /* and one more against sha256sum at run time */
  fmt(cmd, sizeof(cmd), "printf %%s '%s' | sha256sum", tok);
  is_int(run(cmd, out, sizeof(out) - 1, &len), 0, "sha256sum runs");
  out[len < 12 ? len : 12] = '\0';
  is_str(fp2, (const char *)out, "matches sha256sum at run time");

  bm_jwt_fingerprint("", fp2);
  is_str(fp2, "e3b0c44298fc", "empty string: SHA-256 of nothing");
}

/*
 * Fuzz: mutations of valid tokens must never crash, and never verify.
 */

static uint32_t rng_state = 2463534242u;

static uint32_t rng(void)
{
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}

/* A random JSON generator for the fuzz test: valid JSON most of the time,
 * with the members, numbers and escapes the decoder cares about. */
struct gen {
  char buf[2048];
  size_t len;
};

static void gen_put(struct gen *g, const char *s)
{
  size_t n = strlen(s);

  if (g->len + n + 1 < sizeof(g->buf)) {
    memcpy(g->buf + g->len, s, n + 1);
    g->len += n;
  }
}

static void gen_pick(struct gen *g, const char *const *set, size_t n)
{
  gen_put(g, set[rng() % n]);
}

#define GEN_PICK(g, set) gen_pick((g), (set), sizeof(set) / sizeof((set)[0]))

static void gen_number(struct gen *g)
{
  static const char *const lead[] = {"1", "3", "9"}; /* JSON: no leading 0 */
  static const char *const digits[] = {"0", "1", "5", "9"};
  static const char *const exps[] = {"e", "E", "e+", "e-", "E-"};
  int i, n;

  if (rng() % 3 == 0)
    gen_put(g, "-");
  n = 1 + (int)(rng() % 22);
  GEN_PICK(g, lead);
  for (i = 1; i < n; i++)
    GEN_PICK(g, digits);
  if (rng() % 3 == 0) {
    gen_put(g, ".");
    for (i = 0; i < 1 + (int)(rng() % 5); i++)
      GEN_PICK(g, digits);
  }
  if (rng() % 4 == 0) {
    GEN_PICK(g, exps);
    for (i = 0; i < 1 + (int)(rng() % 3); i++)
      GEN_PICK(g, digits);
  }
}

static void gen_string(struct gen *g)
{
  static const char *const pieces[] = {
      "a", "HS256", "RS256", "none", "\\n", "\\u0000", "\\u00e9", "\xc3\xa9",
      "\\\"", "\\\\", "\\/", " "};
  int i;

  gen_put(g, "\"");
  for (i = 0; i < (int)(rng() % 4); i++)
    GEN_PICK(g, pieces);
  gen_put(g, "\"");
}

static void gen_value(struct gen *g, int depth);

static void gen_object(struct gen *g, int depth)
{
  static const char *const keys[] = {"\"alg\"", "\"exp\"", "\"nbf\"",
                                     "\"iat\"", "\"typ\"", "\"x\"", "\"\""};
  int i, n = (int)(rng() % 5);

  gen_put(g, "{");
  for (i = 0; i < n; i++) {
    if (i > 0)
      gen_put(g, ",");
    if (rng() % 4 == 0)
      gen_string(g);
    else
      GEN_PICK(g, keys);
    gen_put(g, ":");
    gen_value(g, depth + 1);
  }
  gen_put(g, "}");
}

static void gen_value(struct gen *g, int depth)
{
  static const char *const literals[] = {"true", "false", "null"};
  int i, n;

  switch (depth > 3 ? rng() % 3 : rng() % 5) {
  case 0:
    gen_number(g);
    break;
  case 1:
    gen_string(g);
    break;
  case 2:
    GEN_PICK(g, literals);
    break;
  case 3:
    gen_put(g, "[");
    for (i = 0, n = (int)(rng() % 4); i < n; i++) {
      if (i > 0)
        gen_put(g, ",");
      gen_value(g, depth + 1);
    }
    gen_put(g, "]");
    break;
  default:
    gen_object(g, depth);
  }
}

static void test_fuzz(void)
{
  static const char alphabet[] =
      "AZaz09-_.=+/ \x01\x7f\x80\xff\"{}[]:,";
  char tok[4096], err[ERRLEN];
  struct gen header, payload;
  struct bm_jwt_claims c;
  int i, j, verified = 0, decoded = 0, bad_alg = 0;
  size_t len;

  for (i = 0; i < 20000; i++) {
    fmt(tok, sizeof(tok), "%s", A1_TOKEN);
    len = strlen(tok);
    for (j = 0; j < 1 + (int)(rng() % 4); j++) {
      switch (rng() % 3) {
      case 0: /* replace */
        tok[rng() % len] = alphabet[rng() % (sizeof(alphabet) - 1)];
        break;
      case 1: /* truncate */
        len = rng() % len + 1;
        tok[len] = '\0';
        break;
      default: /* delete */
        if (len > 1) {
          size_t at = rng() % len;

          memmove(tok + at, tok + at + 1, len - at);
          len--;
        }
      }
    }
    if (bm_jwt_decode(tok, &c, err, sizeof(err)) == 0) {
      decoded++;
      if (strlen(c.alg) == 0 || strlen(c.alg) >= sizeof(c.alg))
        bad_alg++;
    }
    if (bm_jwt_verify_hs256(tok, a1_key, a1_key_len, err, sizeof(err)) == 0 &&
        strcmp(tok, A1_TOKEN) != 0)
      verified++;
  }
  is_int(verified, 0, "no mutation of A.1 verifies (%d of 20000 decoded)",
         decoded);
  is_int(bad_alg, 0, "every decoded alg is 1..15 bytes");

  /* generated JSON, a quarter of it with one byte changed */
  for (i = 0, decoded = 0; i < 20000; i++) {
    header.len = payload.len = 0;
    if (rng() % 4 == 0)
      gen_value(&header, 0);
    else
      gen_put(&header, "{\"alg\":\"HS256\"}");
    if (rng() % 8 == 0)
      gen_value(&payload, 0);
    else
      gen_object(&payload, 0);
    if (rng() % 4 == 0 && payload.len > 0)
      payload.buf[rng() % payload.len] =
          alphabet[rng() % (sizeof(alphabet) - 1)];
    make_token(header.buf, payload.buf, "AAAA", tok, sizeof(tok));
    if (bm_jwt_decode(tok, &c, err, sizeof(err)) == 0) {
      decoded++;
      if (strlen(c.alg) == 0 || strlen(c.alg) >= sizeof(c.alg))
        bad_alg++;
    }
  }
  ok(decoded > 2000 && decoded < 18000,
     "20000 generated JSON tokens: %d accepted, the rest refused, no crash",
     decoded);
  is_int(bad_alg, 0, "every decoded alg is still 1..15 bytes");
}

/*
 * RS256 and ES256 against the openssl command line
 */

static bool keygen(const char *name, const char *args)
{
  char cmd[1024];

  fmt(cmd, sizeof(cmd),
      "openssl genpkey %s -out %s/%s.pem 2>/dev/null && "
      "openssl pkey -in %s/%s.pem -pubout -out %s/%s.pub 2>/dev/null",
      args, tmpdir, name, tmpdir, name, tmpdir, name);
  return run(cmd, NULL, 0, NULL) == 0;
}

/* Every key the RS256 and ES256 tests use, as NAME.pem and NAME.pub. */
static void test_keygen(void)
{
  char cmd[1024];

  ok(keygen("rsa", "-algorithm RSA -pkeyopt rsa_keygen_bits:2048"),
     "openssl genpkey RSA 2048");
  ok(keygen("rsa2", "-algorithm RSA -pkeyopt rsa_keygen_bits:2048"),
     "openssl genpkey a second RSA 2048");
  ok(keygen("rsa1024", "-algorithm RSA -pkeyopt rsa_keygen_bits:1024"),
     "openssl genpkey RSA 1024");
  ok(keygen("ec", "-algorithm EC -pkeyopt ec_paramgen_curve:P-256"),
     "openssl genpkey EC P-256");
  ok(keygen("ec2", "-algorithm EC -pkeyopt ec_paramgen_curve:P-256"),
     "openssl genpkey a second EC P-256");
  ok(keygen("p384", "-algorithm EC -pkeyopt ec_paramgen_curve:P-384"),
     "openssl genpkey EC P-384");
  ok(keygen("ed", "-algorithm ED25519"), "openssl genpkey Ed25519");
  /* no .pub: openssl pkey would ask for the passphrase */
  fmt(cmd, sizeof(cmd),
      "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
      "-aes-256-cbc -pass pass:secret -out %s/ecenc.pem 2>/dev/null",
      tmpdir);
  is_int(run(cmd, NULL, 0, NULL), 0, "openssl genpkey an encrypted EC key");
}

static void key_path(char *out, size_t cap, const char *name, const char *ext)
{
  fmt(out, cap, "%s/%s.%s", tmpdir, name, ext);
}

/* Writes tok's signing input and (raw or DER) signature to files and runs
 * openssl dgst -verify with name.pub.  Returns openssl's exit status. */
static int openssl_verify(const char *tok, const char *name, bool es256)
{
  char in[256], sigp[256], pub[256], cmd[1024];
  unsigned char sig[1024], der[80];
  const char *dot = strrchr(tok, '.');
  int n = token_sig(tok, sig, sizeof(sig));

  if (dot == NULL || n < 0)
    return -1;
  key_path(in, sizeof(in), name, "in");
  key_path(sigp, sizeof(sigp), name, "sig");
  key_path(pub, sizeof(pub), name, "pub");
  if (!write_file(in, tok, (size_t)(dot - tok)))
    return -1;
  if (es256) {
    if (n != 64 || !write_file(sigp, der, raw_to_der(sig, der)))
      return -1;
  } else if (!write_file(sigp, sig, (size_t)n)) {
    return -1;
  }
  fmt(cmd, sizeof(cmd),
      "openssl dgst -sha256 -verify %s -signature %s %s 2>&1", pub, sigp, in);
  return run(cmd, NULL, 0, NULL);
}

/* Builds header.payload, has openssl sign it with name.pem, and appends the
 * JOSE signature. */
static bool openssl_sign(const char *header, const char *payload,
                         const char *name, bool es256, char *tok, size_t cap)
{
  char in[256], sigp[256], pem[256], cmd[1024];
  unsigned char sig[1024], raw[64];
  size_t len = 0, n;

  make_token(header, payload, NULL, tok, cap);
  key_path(in, sizeof(in), name, "osin");
  key_path(sigp, sizeof(sigp), name, "ossig");
  key_path(pem, sizeof(pem), name, "pem");
  if (!write_file(in, tok, strlen(tok)))
    return false;
  fmt(cmd, sizeof(cmd), "openssl dgst -sha256 -sign %s -out %s %s", pem, sigp,
      in);
  if (run(cmd, NULL, 0, NULL) != 0 || !read_file(sigp, sig, sizeof(sig), &len))
    return false;
  if (es256) {
    if (!der_to_raw(sig, len, raw))
      return false;
    memcpy(sig, raw, 64);
    len = 64;
  }
  n = strlen(tok);
  if (n + 1 >= cap)
    return false;
  tok[n++] = '.';
  return bm_base64url_encode(sig, len, tok + n, cap - n) > 0;
}

static void test_rs256(void)
{
  static const char payload[] = "{\"sub\":\"gw\",\"exp\":1900000000}";
  char tok[2048], tok2[2048], err[ERRLEN], pem[256], pub[256], other[256];
  unsigned char sig[1024], sig2[1024];
  char *dot;
  int n, n2;

  key_path(pem, sizeof(pem), "rsa", "pem");
  key_path(pub, sizeof(pub), "rsa", "pub");
  key_path(other, sizeof(other), "rsa2", "pub");

  n = bm_jwt_sign_rs256(payload, pem, tok, sizeof(tok), err, sizeof(err));
  if (!ok(n > 0 && (size_t)n == strlen(tok), "RS256 sign")) {
    /* already a failure; what follows would only mangle an empty token */
    diag("err: %s; the other RS256 tests need this token", err);
    return;
  }
  ok(strncmp(tok, "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.", 37) == 0,
     "header is {\"alg\":\"RS256\",\"typ\":\"JWT\"}");
  is_int(token_sig(tok, sig, sizeof(sig)), 256, "signature is 256 bytes");
  is_int(openssl_verify(tok, "rsa", false), 0,
         "openssl dgst -verify accepts bm's RS256 signature");
  is_int(bm_jwt_verify_rs256(tok, pub, err, sizeof(err)), 0,
         "bm verifies its own RS256 token");
  is_int(bm_jwt_verify_rs256(tok, other, err, sizeof(err)), -1,
         "another RSA key does not verify it");
  ok(has(err, "does not match"), "... on the signature: %s", err);

  /* PKCS#1 v1.5 is deterministic: openssl must produce the same bytes */
  ok(openssl_sign("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", payload, "rsa", false,
                  tok2, sizeof(tok2)),
     "openssl dgst -sign the same signing input");
  is_str(tok2, tok, "openssl's RS256 token is bm's, byte for byte");
  ok(openssl_sign("{\"alg\":\"RS256\"}", "{\"iss\":\"openssl\"}", "rsa", false,
                  tok2, sizeof(tok2)),
     "openssl signs a token of its own");
  is_int(bm_jwt_verify_rs256(tok2, pub, err, sizeof(err)), 0,
         "bm verifies the openssl-signed RS256 token");

  /* tampering */
  n2 = token_sig(tok, sig2, sizeof(sig2));
  sig2[100] ^= 0x40;
  fmt(tok2, sizeof(tok2), "%s", tok);
  dot = strrchr(tok2, '.');
  ok(dot != NULL && n2 == 256 &&
         bm_base64url_encode(sig2, 256, dot + 1,
                             sizeof(tok2) - (size_t)(dot + 1 - tok2)) > 0,
     "flip one signature bit");
  is_int(bm_jwt_verify_rs256(tok2, pub, err, sizeof(err)), -1,
         "bm refuses the flipped signature");
  ok(openssl_verify(tok2, "rsa", false) != 0,
     "openssl refuses it too (the check can fail)");
  fmt(tok2, sizeof(tok2), "%s", tok);
  tok2[strlen(tok2) - 2] = '\0'; /* 342 chars -> 340: 255 bytes */
  is_int(bm_jwt_verify_rs256(tok2, pub, err, sizeof(err)), -1,
         "a 255-byte signature fails");
  ok(has(err, "not 256 bytes"), "... err: %s", err);

  /* wrong keys and algs */
  key_path(pem, sizeof(pem), "rsa1024", "pem");
  is_int(bm_jwt_sign_rs256(payload, pem, tok2, sizeof(tok2), err,
                           sizeof(err)),
         -1, "RS256 refuses a 1024-bit key for signing");
  ok(has(err, "fewer than 2048"), "... err: %s", err);
  key_path(pub, sizeof(pub), "rsa1024", "pub");
  ok(openssl_sign("{\"alg\":\"RS256\"}", "{}", "rsa1024", false, tok2,
                  sizeof(tok2)),
     "openssl signs with the 1024-bit key");
  is_int(bm_jwt_verify_rs256(tok2, pub, err, sizeof(err)), -1,
         "RS256 refuses a 1024-bit key for verifying");
  key_path(pub, sizeof(pub), "rsa", "pub");
  key_path(pem, sizeof(pem), "ec", "pem");
  is_int(bm_jwt_sign_rs256(payload, pem, tok2, sizeof(tok2), err,
                           sizeof(err)),
         -1, "RS256 refuses an EC key");
  ok(has(err, "needs an RSA key"), "... err: %s", err);
  key_path(pem, sizeof(pem), "rsa", "pem");
  is_int(bm_jwt_verify_rs256(tok, pem, err, sizeof(err)), -1,
         "verify wants a public key file, not the private key");
  key_path(pem, sizeof(pem), "nonexistent", "pem");
  is_int(bm_jwt_sign_rs256(payload, pem, tok2, sizeof(tok2), err,
                           sizeof(err)),
         -1, "a missing key file fails");
  ok(has(err, "nonexistent.pem'"), "... naming it: %s", err);
  ok(tok2[0] == '\0', "... leaving out empty");
  is_int(bm_jwt_verify_es256(tok, pub, err, sizeof(err)), -1,
         "an RS256 token does not pass verify_es256");
  ok(has(err, "not ES256"), "... on its alg: %s", err);

  /* alg confusion: RS256 header, HMAC keyed with the public key's PEM */
  {
    unsigned char pemtext[2048];
    size_t pemlen = 0;

    ok(read_file(pub, pemtext, sizeof(pemtext), &pemlen),
       "read the public key PEM");
    make_token("{\"alg\":\"RS256\"}", payload, NULL, tok2, sizeof(tok2));
    hmac_append(tok2, sizeof(tok2), pemtext, pemlen);
    is_int(bm_jwt_verify_rs256(tok2, pub, err, sizeof(err)), -1,
           "an HMAC made with the public key PEM fails RS256");
    make_token("{\"alg\":\"HS256\"}", payload, NULL, tok2, sizeof(tok2));
    hmac_append(tok2, sizeof(tok2), pemtext, pemlen);
    is_int(bm_jwt_verify_rs256(tok2, pub, err, sizeof(err)), -1,
           "an HS256 token fails RS256 verification");
  }

  is_int(bm_jwt_sign_rs256(payload, NULL, tok2, sizeof(tok2), err,
                           sizeof(err)),
         -1, "no key path");
  key_path(pem, sizeof(pem), "rsa", "pem");
  is_int(bm_jwt_sign_rs256(payload, pem, tok2, 300, err, sizeof(err)), -1,
         "cap too small for the signature");
  ok(has(err, "too small"), "... err: %s", err);
}

static void test_es256(void)
{
  static const char payload[] = "{\"sub\":\"gw\",\"nbf\":1700000000}";
  char tok[2048], tok2[2048], err[ERRLEN], pem[256], pub[256], other[256];
  unsigned char sig[128];
  int n, i, good;

  key_path(pem, sizeof(pem), "ec", "pem");
  key_path(pub, sizeof(pub), "ec", "pub");
  key_path(other, sizeof(other), "ec2", "pub");

  n = bm_jwt_sign_es256(payload, pem, tok, sizeof(tok), err, sizeof(err));
  if (!ok(n > 0 && (size_t)n == strlen(tok), "ES256 sign")) {
    diag("err: %s; the other ES256 tests need this token", err);
    return;
  }
  ok(strncmp(tok, "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.", 37) == 0,
     "header is {\"alg\":\"ES256\",\"typ\":\"JWT\"}");
  is_int(token_sig(tok, sig, sizeof(sig)), 64, "signature is R || S, 64 bytes");
  is_int(openssl_verify(tok, "ec", true), 0,
         "openssl dgst -verify accepts bm's ES256 signature (as DER)");
  is_int(bm_jwt_verify_es256(tok, pub, err, sizeof(err)), 0,
         "bm verifies its own ES256 token");
  is_int(bm_jwt_verify_es256(tok, other, err, sizeof(err)), -1,
         "another P-256 key does not verify it");

  /* Many signatures: R or S with leading zero bytes (1 in 128 each) must
   * still be 32 bytes each, and openssl must agree on every one. */
  for (i = 0, good = 0; i < 40; i++) {
    char p[64];

    fmt(p, sizeof(p), "{\"n\":%d}", i);
    if (bm_jwt_sign_es256(p, pem, tok2, sizeof(tok2), err, sizeof(err)) > 0 &&
        token_sig(tok2, sig, sizeof(sig)) == 64 &&
        openssl_verify(tok2, "ec", true) == 0 &&
        bm_jwt_verify_es256(tok2, pub, err, sizeof(err)) == 0)
      good++;
  }
  is_int(good, 40, "40 ES256 signatures, each checked by openssl");

  /* R, then S, below 2^248: the 32-byte halves must keep their leading
   * zero byte.  One signature in 128 has each; 5000 tries miss both with
   * probability under 1e-16. */
  {
    bool r_zero = false, s_zero = false;
    int checked = 0;

    for (i = 0, good = 0; i < 5000 && !(r_zero && s_zero); i++) {
      char p[64];

      fmt(p, sizeof(p), "{\"z\":%d}", i);
      if (bm_jwt_sign_es256(p, pem, tok2, sizeof(tok2), err, sizeof(err)) <
              0 ||
          token_sig(tok2, sig, sizeof(sig)) != 64)
        break;
      if ((sig[0] == 0 && !r_zero) || (sig[32] == 0 && !s_zero)) {
        r_zero = r_zero || sig[0] == 0;
        s_zero = s_zero || sig[32] == 0;
        checked++;
        if (openssl_verify(tok2, "ec", true) == 0 &&
            bm_jwt_verify_es256(tok2, pub, err, sizeof(err)) == 0)
          good++;
        else
          diag("leading zero signature failed: %s", tok2);
      }
    }
    ok(r_zero && s_zero, "found signatures with a leading zero in R and S "
                         "(%d tries)", i);
    ok(checked > 0 && good == checked,
       "openssl and bm verify each of them (%d of %d)", good, checked);
  }

  ok(openssl_sign("{\"alg\":\"ES256\"}", "{\"iss\":\"openssl\"}", "ec", true,
                  tok2, sizeof(tok2)),
     "openssl signs an ES256 token (DER to R || S by hand)");
  is_int(bm_jwt_verify_es256(tok2, pub, err, sizeof(err)), 0,
         "bm verifies the openssl-signed ES256 token");
  for (i = 0, good = 0; i < 20; i++) {
    char p[64];

    fmt(p, sizeof(p), "{\"m\":%d}", i);
    if (openssl_sign("{\"alg\":\"ES256\"}", p, "ec", true, tok2,
                     sizeof(tok2)) &&
        bm_jwt_verify_es256(tok2, pub, err, sizeof(err)) == 0)
      good++;
  }
  is_int(good, 20, "20 openssl ES256 signatures verify in bm");

  /* tampering */
  fmt(tok2, sizeof(tok2), "%s", tok);
  tok2[strlen(tok2) - 20] = tok2[strlen(tok2) - 20] == 'A' ? 'B' : 'A';
  is_int(bm_jwt_verify_es256(tok2, pub, err, sizeof(err)), -1,
         "a changed ES256 signature fails");
  ok(openssl_verify(tok2, "ec", true) != 0, "openssl refuses it too");
  {
    static const unsigned char zero[64];
    char z[100];

    make_token("{\"alg\":\"ES256\"}", payload, NULL, tok2, sizeof(tok2));
    n = bm_base64url_encode(zero, 64, z, sizeof(z));
    strcat(tok2, ".");
    strcat(tok2, z);
    is_int(bm_jwt_verify_es256(tok2, pub, err, sizeof(err)), -1,
           "R = S = 0 fails");
  }
  fmt(tok2, sizeof(tok2), "%sAAAA", tok);
  is_int(bm_jwt_verify_es256(tok2, pub, err, sizeof(err)), -1,
         "a 67-byte signature fails");
  ok(has(err, "not 64 bytes"), "... err: %s", err);
  {
    unsigned char der[80];
    size_t len;
    char *dot;

    /* a DER signature where JOSE wants R || S */
    is_int(token_sig(tok, sig, sizeof(sig)), 64, "tok's R || S");
    len = raw_to_der(sig, der);
    fmt(tok2, sizeof(tok2), "%s", tok);
    dot = strrchr(tok2, '.');
    ok(bm_base64url_encode(der, len, dot + 1, 200) > 0, "DER in the token");
    is_int(bm_jwt_verify_es256(tok2, pub, err, sizeof(err)), -1,
           "a DER-encoded signature fails");
  }

  /* keys */
  key_path(pem, sizeof(pem), "p384", "pem");
  is_int(bm_jwt_sign_es256(payload, pem, tok2, sizeof(tok2), err,
                           sizeof(err)),
         -1, "ES256 refuses a P-384 key");
  ok(has(err, "P-256"), "... err: %s", err);
  key_path(pem, sizeof(pem), "ed", "pem");
  is_int(bm_jwt_sign_es256(payload, pem, tok2, sizeof(tok2), err,
                           sizeof(err)),
         -1, "ES256 refuses an Ed25519 key");
  key_path(pem, sizeof(pem), "ecenc", "pem");
  is_int(bm_jwt_sign_es256(payload, pem, tok2, sizeof(tok2), err,
                           sizeof(err)),
         -1, "an encrypted key is refused, without prompting");
  diag("err: %s", err);
  key_path(pub, sizeof(pub), "rsa", "pub");
  is_int(bm_jwt_verify_es256(tok, pub, err, sizeof(err)), -1,
         "verify_es256 with an RSA key fails");
  key_path(pub, sizeof(pub), "ec", "pub");
  is_int(bm_jwt_verify_rs256(tok, pub, err, sizeof(err)), -1,
         "an ES256 token does not pass verify_rs256");
  key_path(pem, sizeof(pem), "ec", "pem");
  is_int(bm_jwt_sign_es256("[]", pem, tok2, sizeof(tok2), err, sizeof(err)),
         -1, "ES256 refuses a non-object payload");
}

/* Failures leave OpenSSL's per-thread error queue as they found it. */
static void test_error_queue(void)
{
  static const unsigned char key[32] = "0123456789abcdef0123456789abcdef";
  char tok[2048], err[ERRLEN], pem[256];
  unsigned long before, e;
  BIO *bio;

  key_path(pem, sizeof(pem), "nonexistent", "pem");
  is_int(bm_jwt_sign_es256("{}", pem, tok, sizeof(tok), err, sizeof(err)), -1,
         "a failing ES256 sign");
  is_int(ERR_peek_error(), 0, "... leaves the error queue empty");
  key_path(pem, sizeof(pem), "ec", "pub");
  is_int(bm_jwt_verify_es256(A1_TOKEN, pem, err, sizeof(err)), -1,
         "a failing ES256 verify");
  is_int(ERR_peek_error(), 0, "... leaves the error queue empty");

  bio = BIO_new_file("/nonexistent/jwt_test", "r");
  ok(bio == NULL, "make an OpenSSL error of the caller's own");
  before = ERR_peek_last_error();
  key_path(pem, sizeof(pem), "rsa2", "pub");
  make_token("{\"alg\":\"RS256\"}", "{}", NULL, tok, sizeof(tok));
  strcat(tok, ".AAAA");
  is_int(bm_jwt_verify_rs256(tok, pem, err, sizeof(err)), -1,
         "a failing RS256 verify");
  is_int(bm_jwt_verify_hs256(A1_TOKEN, key, sizeof(key), err, sizeof(err)),
         -1, "a failing HS256 verify");
  e = ERR_peek_last_error();
  ok(before != 0 && e == before, "... the caller's error is still the last");
  ERR_clear_error();
}

int main(void)
{
  char cmd[256];

  if (mkdtemp(tmpdir) == NULL) {
    ok(0, "mkdtemp");
    return done_testing();
  }
  diag("keys and scratch files in %s", tmpdir);

  test_base64url();
  test_rfc_examples();
  test_decode_errors();
  test_numeric_dates();
  test_hs256();
  test_tools_present();
  test_openssl_hmac();
  test_fingerprint();
  test_fuzz();
  test_keygen();
  test_rs256();
  test_es256();
  test_error_queue();

  fmt(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
  ok(run(cmd, NULL, 0, NULL) == 0, "remove %s", tmpdir);
  return done_testing();
}
