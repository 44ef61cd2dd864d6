/*
 * bm_count.h - the file bench/bm_count.c (a collectd write plugin) keeps
 * per Count line, and bench/bm_wait.c (and ingest_pub) read: mapped shared.
 */
#ifndef BM_COUNT_H
#define BM_COUNT_H

#include <stdatomic.h>
#include <stdint.h>

struct bm_count_file {
  _Atomic int64_t count;   /* matching values written */
  _Atomic int64_t last_ns; /* CLOCK_REALTIME of the last, in ns */
};

#endif
