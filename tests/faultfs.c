/*
 * faultfs.c - an LD_PRELOAD shim for the integration tests: a failing or
 * stalling disk, on demand, for the files whose path contains
 * BM_FAULT_MATCH, while the file BM_FAULT_WHEN exists (a test creates and
 * removes it to open and close the window). Everything else, and every
 * other file, goes to libc's.
 *
 *   BM_FAULT_FSYNC_EIO=1        fsync and fdatasync fail with EIO;
 *   BM_FAULT_FSYNC_COUNT=FILE   every fsync or fdatasync of a file whose
 *                               path contains BM_FAULT_MATCH, window or
 *                               not, appends a line to FILE (before it
 *                               fails or goes to libc's);
 *   BM_FAULT_WRITE_STALL_MS=N   write and pwrite first create the file
 *                               BM_FAULT_MARK (when set), then sleep N ms:
 *                               a test waits for the mark and acts while
 *                               the process is inside the write.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Does fd's path contain BM_FAULT_MATCH? errno is kept. */
static int matching(int fd)
{
  const char *match = getenv("BM_FAULT_MATCH");
  char link[64], path[PATH_MAX];
  int saved = errno, hit = 0;
  ssize_t n;

  if (match && *match) {
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, path, sizeof(path) - 1);
    if (n > 0) {
      path[n] = '\0';
      hit = strstr(path, match) != NULL;
    }
  }
  errno = saved;
  return hit;
}

/* Does fd's file fall in the window? errno is kept. */
static int failing(int fd)
{
  const char *when = getenv("BM_FAULT_WHEN");
  int saved = errno, hit;

  hit = when && *when && access(when, F_OK) == 0 && matching(fd);
  errno = saved;
  return hit;
}

static long env_long(const char *name)
{
  const char *v = getenv(name);
  return v && *v ? strtol(v, NULL, 10) : 0;
}

/* Appends name's line to BM_FAULT_FSYNC_COUNT when fd's file matches. */
static void count_sync(int fd, const char *name)
{
  const char *file = getenv("BM_FAULT_FSYNC_COUNT");
  char line[32];
  int saved = errno, c;

  if (file && *file && matching(fd)) {
    c = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (c >= 0) {
      int len = snprintf(line, sizeof(line), "%s\n", name);
      ssize_t (*real_write)(int, const void *, size_t) =
          (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
      (void)!real_write(c, line, (size_t)len);
      close(c);
    }
  }
  errno = saved;
}

/* libc's name, unless fd's file fails its fsyncs. */
static int sync_or_fail(int fd, int (**real)(int), const char *name)
{
  count_sync(fd, name);
  if (env_long("BM_FAULT_FSYNC_EIO") && failing(fd)) {
    errno = EIO;
    return -1;
  }
  if (!*real)
    *real = (int (*)(int))dlsym(RTLD_NEXT, name);
  return (*real)(fd);
}

int fsync(int fd)
{
  static int (*real)(int);
  return sync_or_fail(fd, &real, "fsync");
}

int fdatasync(int fd)
{
  static int (*real)(int);
  return sync_or_fail(fd, &real, "fdatasync");
}

/* Before a write to fd: the mark and the stall, when fd's file stalls. */
static void maybe_stall(int fd)
{
  long ms = env_long("BM_FAULT_WRITE_STALL_MS");
  const char *mark = getenv("BM_FAULT_MARK");
  struct timespec ts;
  int saved = errno;

  if (ms <= 0 || !failing(fd))
    return;
  if (mark && *mark) {
    int m = open(mark, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (m >= 0)
      close(m);
  }
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
  errno = saved;
}

ssize_t write(int fd, const void *buf, size_t n)
{
  static ssize_t (*real)(int, const void *, size_t);

  maybe_stall(fd);
  if (!real)
    real = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
  return real(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
  static ssize_t (*real)(int, const void *, size_t, off_t);

  maybe_stall(fd);
  if (!real)
    real = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT,
                                                               "pwrite");
  return real(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
  return pwrite(fd, buf, n, off);
}
