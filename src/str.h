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

#endif
