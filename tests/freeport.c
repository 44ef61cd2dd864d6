/*
 * freeport - print free TCP ports on 127.0.0.1 for the integration tests.
 *
 * Usage: freeport [N]
 *
 * Binds N (default 1, at most 64) TCP sockets to 127.0.0.1 port 0, asks the
 * kernel which port each one got, prints the ports one per line and closes
 * the sockets. All N sockets stay bound until every port is known, so the N
 * ports are distinct. A port is only free at the moment it is printed: the
 * caller binds it soon after, and the harness retries when it lost the race.
 *
 * Exit status: 0 on success, 1 with a message on stderr on any error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FREEPORT_MAX 64

/* Parses the optional count argument; returns -1 when it is not 1..MAX. */
static int freeport_parse_count(const char *arg)
{
  char *end = NULL;
  long n;

  errno = 0;
  n = strtol(arg, &end, 10);
  if (errno != 0 || end == arg || *end != '\0' || n < 1 || n > FREEPORT_MAX)
    return -1;
  return (int)n;
}

int main(int argc, char **argv)
{
  int fds[FREEPORT_MAX];
  unsigned ports[FREEPORT_MAX];
  int count = 1;
  int opened = 0;
  int status = 1;

  if (argc > 2) {
    fprintf(stderr, "usage: freeport [N]\n");
    return 1;
  }
  if (argc == 2) {
    count = freeport_parse_count(argv[1]);
    if (count < 0) {
      fprintf(stderr, "freeport: count \"%s\" is not a number from 1 to %d\n",
              argv[1], FREEPORT_MAX);
      return 1;
    }
  }

  for (opened = 0; opened < count; opened++) {
    struct sockaddr_in addr;
    socklen_t len = sizeof(addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0) {
      fprintf(stderr, "freeport: socket failed: %s\n", strerror(errno));
      goto out;
    }
    fds[opened] = fd;

    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
      fprintf(stderr, "freeport: bind to 127.0.0.1:0 failed: %s\n",
              strerror(errno));
      close(fd);
      goto out;
    }
    if (getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
      fprintf(stderr, "freeport: getsockname failed: %s\n", strerror(errno));
      close(fd);
      goto out;
    }
    ports[opened] = ntohs(addr.sin_port);
  }

  for (int i = 0; i < count; i++)
    printf("%u\n", ports[i]);
  if (fflush(stdout) != 0 || ferror(stdout)) {
    fprintf(stderr, "freeport: writing to stdout failed\n");
    goto out;
  }
  status = 0;

out:
  for (int i = 0; i < opened; i++)
    close(fds[i]);
  return status;
}
