/*
 * crc32c.h - CRC-32C (Castagnoli), the checksum of the journal's records.
 *
 * The polynomial is 0x1EDC6F41, used reflected (0x82F63B78), with the
 * register preset to all ones and the result inverted: the CRC of iSCSI
 * (RFC 3720 section 12.1 and appendix B.4), SCTP, ext4 and LevelDB.  It
 * detects every error of up to 3 flipped bits and every burst of up to
 * 32 bits in the record sizes the journal writes, which a plain sum does
 * not.
 *
 *   bm_crc32c(0, "123456789", 9) == 0xE3069283
 *
 * Slicing-by-8 in portable C: eight 256-entry tables, built once per
 * process (pthread_once) on the first call, then 8 input bytes per step.
 * Thread-safe; no allocation.
 */
#ifndef BM_CRC32C_H
#define BM_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends `crc`, the CRC-32C of some bytes before (0 for none), by the len
 * bytes at buf and returns the CRC-32C of the whole.  So
 * bm_crc32c(bm_crc32c(0, a, n), b, m) equals the CRC-32C of a followed by
 * b.  buf may be NULL when len is 0.  Never fails. */
uint32_t bm_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
