/*
 * clock.h - the two clocks of the plugin and its tools: monotonic seconds
 * for every deadline, hold and timeout (a step of the wall clock must move
 * none of them), and wall milliseconds for what is written down (journal
 * records, protocol times).
 */
#ifndef BM_CLOCK_H
#define BM_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline double bm_now_mono(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline int64_t bm_now_wall_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
