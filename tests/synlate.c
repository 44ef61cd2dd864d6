/*
 * synlate.c - a loopback TCP relay whose first connection attempts are not
 * answered for a while: the connect of a client stays in SYN_SENT, as with a
 * broker across a network, where the TCP handshake does not complete at
 * once as on loopback.  For the tests.
 *
 * Usage: synlate LISTEN_PORT BROKER_PORT DROP_SECONDS [SECONDS]
 *
 * Listens on 127.0.0.1:LISTEN_PORT with a backlog of 0 and fills that
 * backlog with a connection of its own, so that the kernel drops the SYNs
 * that come during the next DROP_SECONDS (the client retransmits at 1 s,
 * 3 s, ...); then makes room and relays every connection, byte for byte, to
 * 127.0.0.1:BROKER_PORT (up to 8 at once).  Prints "ready" once the
 * backlog is full and one line per connection accepted.  Exits after
 * SECONDS (default 300).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAIRS 8

static struct sockaddr_in loopback(int port)
{
  struct sockaddr_in a;

  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

static int dial(int port)
{
  struct sockaddr_in a = loopback(port);
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Copies what fd has to peer; -1 when fd is done (EOF or error). */
static int pass(int fd, int peer)
{
  char buf[65536];
  ssize_t n = read(fd, buf, sizeof(buf));

  if (n <= 0)
    return -1;
  for (ssize_t off = 0; off < n;) {
    ssize_t w = write(peer, buf + off, (size_t)(n - off));
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    off += w;
  }
  return 0;
}

int main(int argc, char **argv)
{
  int lport, bport, one = 1, lfd, dummy, pair[PAIRS][2];
  double drop;
  long limit;
  struct sockaddr_in a;
  struct timespec ts;
  time_t end;

  if (argc < 4 || argc > 5) {
    fprintf(stderr,
            "usage: synlate LISTEN_PORT BROKER_PORT DROP_SECONDS [SECONDS]\n");
    return 2;
  }
  lport = atoi(argv[1]);
  bport = atoi(argv[2]);
  drop = atof(argv[3]);
  limit = argc == 5 ? atol(argv[4]) : 300;
  end = time(NULL) + limit;
  signal(SIGPIPE, SIG_IGN);
  a = loopback(lport);
  lfd = socket(AF_INET, SOCK_STREAM, 0);
  if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
      bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, 0)) {
    perror("synlate: listen");
    return 1;
  }
  if ((dummy = dial(lport)) < 0) { /* fills the backlog of 0 */
    perror("synlate: connect to itself");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  ts.tv_sec = (time_t)drop;
  ts.tv_nsec = (long)((drop - (double)ts.tv_sec) * 1e9);
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
  close(accept(lfd, NULL, NULL)); /* room for the retransmitted SYN */
  close(dummy);
  for (int i = 0; i < PAIRS; i++)
    pair[i][0] = pair[i][1] = -1;

  while (time(NULL) < end) {
    struct pollfd p[1 + 2 * PAIRS];
    int n = 1;

    p[0].fd = lfd;
    p[0].events = POLLIN;
    for (int i = 0; i < PAIRS; i++)
      for (int k = 0; k < 2; k++) {
        p[n].fd = pair[i][k];
        p[n].events = POLLIN;
        n++;
      }
    if (poll(p, (nfds_t)n, 1000) <= 0)
      continue;
    if (p[0].revents & POLLIN) {
      int c = accept(lfd, NULL, NULL), u, slot = -1;

      for (int i = 0; i < PAIRS && slot < 0; i++)
        if (pair[i][0] < 0)
          slot = i;
      if (c >= 0 && slot >= 0 && (u = dial(bport)) >= 0) {
        pair[slot][0] = c;
        pair[slot][1] = u;
        printf("accepted\n");
        fflush(stdout);
      } else if (c >= 0) {
        close(c);
      }
    }
    for (int i = 0; i < PAIRS; i++)
      for (int k = 0; k < 2; k++) {
        struct pollfd *q = &p[1 + 2 * i + k];
        if (pair[i][0] < 0 || !(q->revents & (POLLIN | POLLHUP | POLLERR)))
          continue;
        if (pass(pair[i][k], pair[i][1 - k]) != 0) {
          close(pair[i][0]);
          close(pair[i][1]);
          pair[i][0] = pair[i][1] = -1;
        }
      }
  }
  return 0;
}
