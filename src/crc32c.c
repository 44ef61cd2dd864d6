/*
 * crc32c.c - see crc32c.h.
 *
 * Slicing-by-8 (Kounavis and Berry, Intel 2005): table[0] is the classic
 * byte-at-a-time table of the reflected polynomial; table[k][b] is the CRC
 * of byte b followed by k zero bytes, so the CRC of 8 bytes is the xor of
 * eight lookups, one per byte, instead of eight dependent steps.  The words
 * are assembled byte by byte, so the code is independent of the host's
 * endianness and alignment; the compiler turns the assembly into one load
 * where that is allowed.
 */
#include "crc32c.h"

#include <assert.h>
#include <pthread.h>

#define BM_CRC32C_POLY 0x82F63B78u /* 0x1EDC6F41 reflected */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_table_init(void)
{
  for (uint32_t b = 0; b < 256; b++) {
    uint32_t c = b;
    for (int k = 0; k < 8; k++)
      c = (c & 1) ? (c >> 1) ^ BM_CRC32C_POLY : c >> 1;
    crc_table[0][b] = c;
  }
  for (uint32_t b = 0; b < 256; b++) {
    uint32_t c = crc_table[0][b];
    for (int t = 1; t < 8; t++) {
      c = crc_table[0][c & 0xFF] ^ (c >> 8);
      crc_table[t][b] = c;
    }
  }
}

uint32_t bm_crc32c(uint32_t crc, const void *buf, size_t len)
{
  const unsigned char *p = buf;
  uint32_t c = ~crc;
  int rc;

  /* pthread_once fails only on invalid arguments, which these are not. */
  rc = pthread_once(&crc_once, crc_table_init);
  assert(rc == 0);
  (void)rc;

  while (len >= 8) {
    uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 |
                       (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
    uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 |
                  (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
    c = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^
        crc_table[5][(lo >> 16) & 0xFF] ^ crc_table[4][lo >> 24] ^
        crc_table[3][hi & 0xFF] ^ crc_table[2][(hi >> 8) & 0xFF] ^
        crc_table[1][(hi >> 16) & 0xFF] ^ crc_table[0][hi >> 24];
    p += 8;
    len -= 8;
  }
  while (len-- > 0)
    c = crc_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
  return ~c;
}
