/*
 * bm_wait.c - waits until a bench/bm_count.c counter reaches a count.
 *
 *   bm_wait FILE TARGET STALL_SECONDS
 *
 * Polls the counter every millisecond. Prints the CLOCK_REALTIME (ns) of
 * the value that reached TARGET (the last one counted) and exits 0; exits 1
 * with the count reached when nothing was counted for STALL_SECONDS, or
 * after 300 s in all.
 */
#include "bm_count.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
  struct bm_count_file *f;
  int64_t target, last = -1;
  double stall;
  int fd;

  if (argc != 4) {
    fprintf(stderr, "usage: bm_wait FILE TARGET STALL_SECONDS\n");
    return 2;
  }
  target = strtoll(argv[2], NULL, 10);
  stall = atof(argv[3]);
  fd = open(argv[1], O_RDONLY);
  if (fd < 0) {
    perror(argv[1]);
    return 1;
  }
  f = mmap(NULL, sizeof(*f), PROT_READ, MAP_SHARED, fd, 0);
  if (f == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  for (long ms = 0, quiet = 0; ms < 300000; ms++) {
    int64_t c = atomic_load(&f->count);
    if (c >= target) {
      printf("%" PRId64 "\n", atomic_load(&f->last_ns));
      return 0;
    }
    quiet = c == last ? quiet + 1 : 0;
    last = c;
    if (quiet >= stall * 1000)
      break;
    struct timespec t = {0, 1000000};
    nanosleep(&t, NULL);
  }
  fprintf(stderr, "bm_wait: %s: %" PRId64 " of %" PRId64 "\n", argv[1], last,
          target);
  return 1;
}
