/*
 * alloc.h - the one place the core allocates memory.
 *
 * Every allocation of the collectd-free core goes through these functions,
 * so that a test can make the Nth one fail (SQLite's malloc fault
 * injection) and check that each failure is reported and nothing crashes
 * or leaks.  They behave exactly like their libc namesakes otherwise; free
 * with free().  Thread-safe.
 */
#ifndef BM_ALLOC_H
#define BM_ALLOC_H

#include <stddef.h>

void *bm_malloc(size_t size);
void *bm_calloc(size_t n, size_t size);
void *bm_realloc(void *p, size_t size);
char *bm_strdup(const char *s);
char *bm_strndup(const char *s, size_t n);

/* Testing: the nth allocation from now fails (returns NULL, errno ENOMEM);
 * 0 turns failures off.  Returns nothing; see bm_alloc_calls. */
void bm_alloc_fail_at(unsigned long n);
/* Allocations made since the last bm_alloc_fail_at. */
unsigned long bm_alloc_calls(void);
/* Whether the planned failure has happened. */
int bm_alloc_failed(void);

#endif
