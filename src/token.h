/*
 * token.h - where a gateway's JWT comes from, and whether it is still good.
 *
 * Three sources, one per Gateway:
 *
 *   file     TokenFile: read at start and again whenever its modification
 *            time, size or inode changes (an outside tool rotates it).
 *   mint     <Token>: signed here with OpenSSL (HS256, RS256 or ES256, see
 *            jwt.h) from a key file, with iss/sub/aud, iat, nbf, exp =
 *            iat + Lifetime, a random jti and extra string claims.
 *   command  TokenCommand: a command (run by /bin/sh -c) whose standard
 *            output is the token, killed after a timeout.
 *
 * The token's claims are decoded (jwt.h) to learn exp, nbf and iat; a token
 * that is no JWT at all is used as it is, without expiry.  Minted and
 * commanded tokens are renewed when RenewBefore seconds (or less) of their
 * life remain, and on demand (bm_token_refresh with force, after the
 * gateway answered "unauthorized").
 *
 * Secrets never leave this module in a printable form: the value goes into
 * the command envelope only, logs name it by its fingerprint (jwt.h), and
 * buffers that held it are cleared before they are freed.  A token or key
 * file that group or others may read gets a warning.
 *
 * Time comes in as an argument (seconds since the epoch), so tests drive
 * expiry without waiting.  Not thread-safe: the gateway thread owns it.
 */
#ifndef BM_TOKEN_H
#define BM_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BM_TOKEN_PATH_SIZE 4096
#define BM_TOKEN_STR_SIZE 256
#define BM_TOKEN_MAX_CLAIMS 16

enum bm_token_kind { BM_TOKEN_FILE = 1, BM_TOKEN_MINT, BM_TOKEN_COMMAND };
enum bm_token_alg { BM_TOKEN_HS256 = 1, BM_TOKEN_RS256, BM_TOKEN_ES256 };

struct bm_token_claim {
  char name[64];
  char value[BM_TOKEN_STR_SIZE];
};

/* Settings, validated by the caller except where bm_token_new says. */
struct bm_token_conf {
  enum bm_token_kind kind;
  char file[BM_TOKEN_PATH_SIZE];    /* file: the token; mint: the key */
  char command[BM_TOKEN_PATH_SIZE]; /* command */
  double command_timeout;           /* s, command */
  enum bm_token_alg alg;            /* mint */
  char issuer[BM_TOKEN_STR_SIZE];   /* mint: "" leaves the claim out */
  char subject[BM_TOKEN_STR_SIZE];
  char audience[BM_TOKEN_STR_SIZE];
  double lifetime;                  /* s, mint */
  struct bm_token_claim claims[BM_TOKEN_MAX_CLAIMS];
  int n_claims;
  double renew_before;              /* s: renew minted/commanded tokens */
};

struct bm_token;
typedef struct bm_token bm_token_t;

/* Creates a token source and gets its first token (reads the file, signs,
 * or runs the command).  Returns NULL with a one-line reason in err: an
 * unreadable or empty file, a key that does not fit the algorithm (an HMAC
 * key shorter than 32 bytes, a wrong key type), a command that fails or
 * times out, out of memory. */
bm_token_t *bm_token_new(const struct bm_token_conf *conf, int64_t now,
                         char *err, size_t errlen);
/* Clears and frees; NULL is a no-op. */
void bm_token_free(bm_token_t *t);

/* Brings the token up to date at `now`: a file is read again when it
 * changed; a minted or commanded token is renewed when force is set or when
 * it expires within renew_before.  Returns 1 when the token changed, 0 when
 * not, -1 when getting a new one failed (err says why; the previous token
 * stays in use). */
int bm_token_refresh(bm_token_t *t, int64_t now, bool force, char *err,
                     size_t errlen);

/* The current token, NUL-terminated, owned by t, valid until the next
 * refresh or free.  Never "" after a successful bm_token_new. */
const char *bm_token_value(const bm_token_t *t);
/* Its fingerprint (12 hex digits), for log lines. */
const char *bm_token_fingerprint(const bm_token_t *t);
/* exp, when the token carries one; false otherwise. */
bool bm_token_expiry(const bm_token_t *t, int64_t *exp);

/* Whether a command may carry the token at `now`, allowing `leeway`
 * seconds of clock difference: 0 when usable, -1 when it is known to be
 * expired (exp + leeway <= now) or not yet valid (nbf - leeway > now), with
 * the reason ("token expired", "token not valid before ...") in why. */
int bm_token_usable(const bm_token_t *t, int64_t now, int64_t leeway,
                    char *why, size_t whylen);

#endif
