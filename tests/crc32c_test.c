/*
 * crc32c_test.c - unit tests of CRC-32C (src/crc32c.h).
 *
 * The published vectors: the "123456789" check value of the CRC catalogue
 * and the five of RFC 3720 appendix B.4 (iSCSI).  Then the properties the
 * journal relies on: any split of a buffer into incremental calls gives the
 * one-shot CRC, and the slicing-by-8 code agrees with a bit-at-a-time
 * reference at every length and alignment (the 8-byte loop and the byte
 * tail meet at every remainder).
 */
#include "crc32c.h"

#include <stdint.h>
#include <string.h>

#include "tap.h"

/* The definition, one bit at a time: slow, obviously right. */
static uint32_t crc_reference(const unsigned char *p, size_t n)
{
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++)
      c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
  }
  return ~c;
}

static uint64_t rng_state = 0x243F6A8885A308D3ULL;
static uint64_t rng(void)
{
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1DULL;
}

static void test_vectors(void)
{
  unsigned char buf[48];

  is_int(bm_crc32c(0, "123456789", 9), 0xE3069283u, "check value of \"123456789\"");
  is_int(bm_crc32c(0, NULL, 0), 0, "empty input");
  is_int(bm_crc32c(0, "a", 1), 0xC1D04330u, "\"a\"");

  /* RFC 3720 B.4 */
  memset(buf, 0, 32);
  is_int(bm_crc32c(0, buf, 32), 0x8A9136AAu, "B.4: 32 bytes of zeros");
  memset(buf, 0xFF, 32);
  is_int(bm_crc32c(0, buf, 32), 0x62A8AB43u, "B.4: 32 bytes of 0xFF");
  for (int i = 0; i < 32; i++)
    buf[i] = (unsigned char)i;
  is_int(bm_crc32c(0, buf, 32), 0x46DD794Eu, "B.4: 32 incrementing bytes");
  for (int i = 0; i < 32; i++)
    buf[i] = (unsigned char)(31 - i);
  is_int(bm_crc32c(0, buf, 32), 0x113FDB5Cu, "B.4: 32 decrementing bytes");

  static const unsigned char pdu[48] = {
      0x01, 0xC0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
      0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  is_int(bm_crc32c(0, pdu, sizeof(pdu)), 0xD9963A56u,
         "B.4: iSCSI read command PDU");
}

static void test_incremental(void)
{
  static const char text[] = "123456789";
  int bad = 0;

  /* Every split point of the check string, and three pieces. */
  for (size_t i = 0; i <= 9; i++) {
    uint32_t c = bm_crc32c(bm_crc32c(0, text, i), text + i, 9 - i);
    bad += c != 0xE3069283u;
    for (size_t j = i; j <= 9; j++) {
      c = bm_crc32c(0, text, i);
      c = bm_crc32c(c, text + i, j - i);
      c = bm_crc32c(c, text + j, 9 - j);
      bad += c != 0xE3069283u;
    }
  }
  is_int(bad, 0, "every 2- and 3-way split of \"123456789\" gives the check value");

  /* Random buffers cut into random pieces, including empty ones. */
  static unsigned char buf[4096];
  bad = 0;
  for (int round = 0; round < 200; round++) {
    size_t n = (size_t)(rng() % sizeof(buf));
    for (size_t i = 0; i < n; i++)
      buf[i] = (unsigned char)rng();
    uint32_t whole = bm_crc32c(0, buf, n), c = 0;
    size_t at = 0;
    while (at < n) {
      size_t piece = (size_t)(rng() % 40);
      if (piece > n - at)
        piece = n - at;
      c = bm_crc32c(c, buf + at, piece);
      at += piece;
    }
    bad += c != whole;
  }
  is_int(bad, 0, "random buffers fed in random pieces equal the one-shot CRC");
}

static void test_reference(void)
{
  static unsigned char buf[300];
  int bad = 0;

  for (size_t i = 0; i < sizeof(buf); i++)
    buf[i] = (unsigned char)rng();
  /* Every alignment 0..7 and every length up to 280. */
  for (size_t off = 0; off < 8; off++)
    for (size_t n = 0; n + off <= 288; n++)
      bad += bm_crc32c(0, buf + off, n) != crc_reference(buf + off, n);
  is_int(bad, 0, "slicing-by-8 equals the bitwise definition at every "
                 "length and alignment");

  /* Single-bit errors never go unnoticed (the journal's bit-flip tests
   * depend on it). */
  bad = 0;
  uint32_t good = bm_crc32c(0, buf, 256);
  for (size_t bit = 0; bit < 256 * 8; bit++) {
    buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
    bad += bm_crc32c(0, buf, 256) == good;
    buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
  }
  is_int(bad, 0, "every single-bit flip of 256 bytes changes the CRC");
}

int main(void)
{
  diag("CRC-32C (Castagnoli), reflected polynomial 0x82F63B78");
  test_vectors();
  test_incremental();
  test_reference();
  return done_testing();
}
