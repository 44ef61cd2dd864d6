/*
 * alloc.c - see alloc.h.
 */
#include "alloc.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_ulong calls;
static atomic_ulong fail_at; /* 0: never */
static atomic_int failed;

static int should_fail(void)
{
  unsigned long n = atomic_fetch_add(&calls, 1) + 1;
  unsigned long at = atomic_load(&fail_at);

  if (at == 0 || n != at)
    return 0;
  atomic_store(&failed, 1);
  errno = ENOMEM;
  return 1;
}

void bm_alloc_fail_at(unsigned long n)
{
  atomic_store(&calls, 0);
  atomic_store(&failed, 0);
  atomic_store(&fail_at, n);
}

unsigned long bm_alloc_calls(void) { return atomic_load(&calls); }

int bm_alloc_failed(void) { return atomic_load(&failed); }

void *bm_malloc(size_t size) { return should_fail() ? NULL : malloc(size); }

void *bm_calloc(size_t n, size_t size)
{
  return should_fail() ? NULL : calloc(n, size);
}

void *bm_realloc(void *p, size_t size)
{
  return should_fail() ? NULL : realloc(p, size);
}

char *bm_strdup(const char *s) { return should_fail() ? NULL : strdup(s); }

char *bm_strndup(const char *s, size_t n)
{
  return should_fail() ? NULL : strndup(s, n);
}
