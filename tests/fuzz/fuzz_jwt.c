/*
 * fuzz_jwt.c - libFuzzer harness: a token from a file an operator (or a
 * tool) wrote, through bm_jwt_decode and bm_jwt_verify_hs256.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static const unsigned char key[32] = "0123456789abcdef0123456789abcdef";
  struct bm_jwt_claims claims;
  char err[256];
  char *token = malloc(size + 1);

  if (!token)
    return 0;
  memcpy(token, data, size);
  token[size] = '\0';
  (void)bm_jwt_decode(token, &claims, err, sizeof(err));
  (void)bm_jwt_verify_hs256(token, key, sizeof(key), err, sizeof(err));
  free(token);
  return 0;
}
