/*
 * str.h - bounded string copy for the fixed-size name fields of events and
 * records, which the receive path fills several times per message.
 */
#ifndef BM_STR_H
#define BM_STR_H

#include <stddef.h>
#include <string.h>

/* Copies src (NULL reads as "") into dst of `size` bytes (size >= 1), cut
 * to size - 1 bytes and always NUL-terminated: snprintf(dst, size, "%s",
 * src) without the format parsing. */
static inline void bm_str_copy(char *dst, size_t size, const char *src)
{
  size_t n;

  if (src == NULL)
    src = "";
  n = strlen(src); /* src is a C string, as snprintf's "%s" needs */
  if (n > size - 1)
    n = size - 1;
  memcpy(dst, src, n);
  dst[n] = '\0';
}

/* Appends src (NULL reads as "") to the string ending at dst[at] in dst
 * of `size` bytes (size >= 1, at < size), cut where it would not fit and
 * always NUL-terminated, as snprintf cuts; returns the new end.  For a
 * message built piece by piece on a hot path, without the format
 * parsing. */
static inline size_t bm_str_append(char *dst, size_t size, size_t at,
                                   const char *src)
{
  size_t n;

  if (src == NULL)
    src = "";
  n = strlen(src);
  if (n > size - 1 - at)
    n = size - 1 - at;
  memcpy(dst + at, src, n);
  dst[at + n] = '\0';
  return at + n;
}

/* Makes s printable in place, keeping its length: what would not print
 * becomes '?', one per byte: C0 control characters and DEL (a newline
 * would start a line of its own in a log or a notification), C1 ones
 * (U+0080..U+009F as UTF-8; U+009B is a terminal's CSI), and the bytes of
 * a UTF-8-encoded surrogate (ED A0..BF xx: not UTF-8; yajl decodes an
 * escaped lone low surrogate "\uDC00" to them).  For text from a message,
 * a file or a command, put in a log line or a notification. */
static inline void bm_str_printable(char *s)
{
  for (unsigned char *p = (unsigned char *)s; *p; p++) {
    if (*p < 0x20 || *p == 0x7f)
      *p = '?';
    else if (p[0] == 0xC2 && p[1] >= 0x80 && p[1] <= 0x9F)
      p[0] = p[1] = '?';
    else if (p[0] == 0xED && p[1] >= 0xA0 && p[1] <= 0xBF && p[2])
      p[0] = p[1] = p[2] = '?';
  }
}

#endif
