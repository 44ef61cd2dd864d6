/*
 * failsync.c - an LD_PRELOAD shim for the integration tests: fsync and
 * fdatasync fail with EIO, as on a failing disk, for the files whose path
 * contains BM_FAILSYNC_MATCH, while the file BM_FAILSYNC_WHEN exists.
 * Everything else goes to libc's. A test creates and removes
 * BM_FAILSYNC_WHEN to open and close the window.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Does fd's file fall in the window? errno is kept. */
static int failing(int fd)
{
  const char *match = getenv("BM_FAILSYNC_MATCH");
  const char *when = getenv("BM_FAILSYNC_WHEN");
  char link[64], path[PATH_MAX];
  int saved = errno, hit = 0;
  ssize_t n;

  if (match && *match && when && *when && access(when, F_OK) == 0) {
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

/* libc's name, unless fd's file is failing. */
static int sync_or_fail(int fd, int (**real)(int), const char *name)
{
  if (failing(fd)) {
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
