/*
 * jwt.h - JSON Web Tokens (RFC 7519) as the gateway API uses them.
 *
 * The plugin sends an opaque token it reads from a file; it decodes the
 * payload only to learn exp, nbf and iat (never trusting them for anything
 * but its own scheduling).  The gateway simulator verifies HS256 signatures
 * with a shared secret.  Later the plugin mints its own tokens.
 *
 * A compact JWS is three base64url (RFC 4648 section 5, no padding) parts
 * separated by '.': header, payload, signature.  Decoding rule: exactly two
 * dots, each part non-empty and valid unpadded base64url in canonical form
 * (unused low bits zero), header and payload JSON objects without comments,
 * NUL bytes or duplicate top-level keys, header "alg" a string of 1..15
 * bytes (never truncated), exp/nbf/iat when present integers (fractions are
 * truncated toward zero, as RFC 7519 NumericDate allows them).
 *
 * Secrets never leave this module in a printable form: use
 * bm_jwt_fingerprint() to name a token in a log line.
 */
#ifndef BM_JWT_H
#define BM_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BM_JWT_MAX_SIZE 8192 /* longer tokens are rejected */

struct bm_jwt_claims {
  char alg[16]; /* header "alg", e.g. "HS256" */
  bool has_exp, has_nbf, has_iat;
  int64_t exp, nbf, iat; /* seconds since the epoch */
};

/* Decodes header and payload of `token` (NUL-terminated) without checking
 * the signature.  Returns 0, or -1 with a one-line reason in err. */
int bm_jwt_decode(const char *token, struct bm_jwt_claims *out, char *err,
                  size_t errlen);

/* Verifies an HS256 token against key/keylen with a constant-time compare.
 * Returns 0 when the header says HS256 and the signature matches, -1
 * otherwise (err says which), also when keylen < 32 (RFC 7518 3.2) or the
 * token fails bm_jwt_decode's rule. */
int bm_jwt_verify_hs256(const char *token, const unsigned char *key,
                        size_t keylen, char *err, size_t errlen);

/* Signs `payload_json` (a JSON object text) as an HS256 JWS with the header
 * {"alg":"HS256","typ":"JWT"}.  Writes the NUL-terminated token into out;
 * returns its length, or -1 when the key is shorter than 32 bytes,
 * payload_json is not a JSON object bm_jwt_decode would accept (exp/nbf/iat
 * included), the token would exceed BM_JWT_MAX_SIZE, cap is too small or
 * OpenSSL fails; out then holds an empty string when cap > 0. */
int bm_jwt_sign_hs256(const char *payload_json, const unsigned char *key,
                      size_t keylen, char *out, size_t cap);

/* RS256 (PKCS#1 v1.5, RSA keys of at least 2048 bits) and ES256 (P-256,
 * signature in JOSE's raw 64-byte R||S form) with PEM key files; encrypted
 * keys are refused.  Sign: as bm_jwt_sign_hs256, plus err.  Verify: 0 when
 * the header's alg matches, the key is of that type and the signature is
 * valid; -1 with err otherwise. */
int bm_jwt_sign_rs256(const char *payload_json, const char *key_path,
                      char *out, size_t cap, char *err, size_t errlen);
int bm_jwt_sign_es256(const char *payload_json, const char *key_path,
                      char *out, size_t cap, char *err, size_t errlen);
int bm_jwt_verify_rs256(const char *token, const char *pubkey_path, char *err,
                        size_t errlen);
int bm_jwt_verify_es256(const char *token, const char *pubkey_path, char *err,
                        size_t errlen);

/* Writes the first 12 hex digits of SHA-256(token) and a NUL into out
 * (at least 13 bytes): the only way a token may appear in a log line.
 * Writes "------------" when token is NULL or SHA-256 fails. */
void bm_jwt_fingerprint(const char *token, char out[13]);

/* base64url without padding.  encode returns the output length (NUL
 * written) or -1 when cap is too small; decode returns the number of bytes
 * written, or -1 on an invalid character, non-zero unused bits in the last
 * character, an impossible length or cap too small. */
int bm_base64url_encode(const unsigned char *in, size_t len, char *out,
                        size_t cap);
int bm_base64url_decode(const char *in, size_t len, unsigned char *out,
                        size_t cap);

#endif
