/*
 * mqttcut.c - a loopback TCP proxy for MQTT that drops the connection right
 * after forwarding each PUBLISH a client sends: the broker fault "a broker
 * that drops the connection after every PUBLISH", for the tests.  Or, given
 * SWALLOW, one that never cuts but loses the client's PUBLISHes whose bytes
 * contain SWALLOW: the broker never sees them and never acknowledges them.
 *
 * Usage: mqttcut LISTEN_PORT BROKER_PORT [SECONDS [SWALLOW]]
 *
 * Listens on 127.0.0.1:LISTEN_PORT; each connection is relayed to
 * 127.0.0.1:BROKER_PORT.  Bytes from the client are parsed as MQTT packets
 * (fixed header: type in the high nibble, remaining length as a variable
 * byte integer); after a whole PUBLISH (type 3) has been forwarded, both
 * sides are closed.  One connection at a time; prints one line per cut
 * (or per PUBLISH swallowed) to stdout.  Exits after SECONDS (default 300).
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

static int listen_on(int port)
{
  struct sockaddr_in a = {0};
  int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
      bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 4)) {
    perror("mqttcut: listen");
    exit(1);
  }
  return fd;
}

static int connect_to(int port)
{
  struct sockaddr_in a = {0};
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
    return fd;
  if (fd >= 0)
    close(fd);
  return -1;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Relays one client until it or the broker closes, or a PUBLISH passed
 * (without swallow; with it, drops the PUBLISHes that contain it). */
static void relay(int client, int broker, const char *swallow,
                  unsigned long *cuts)
{
  unsigned char buf[65536];
  size_t have = 0; /* client bytes not yet forwarded (a partial packet) */

  for (;;) {
    struct pollfd p[2] = {{client, POLLIN, 0}, {broker, POLLIN, 0}};
    if (poll(p, 2, 1000) < 0 && errno != EINTR)
      return;
    if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      unsigned char tmp[16384];
      ssize_t r = read(broker, tmp, sizeof(tmp));
      if (r <= 0 || write_all(client, tmp, (size_t)r) != 0)
        return;
    }
    if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
      continue;
    ssize_t r = read(client, buf + have, sizeof(buf) - have);
    if (r <= 0)
      return;
    have += (size_t)r;
    /* Forward whole packets; cut after a PUBLISH. */
    for (;;) {
      size_t len = 0, i = 1;
      int shift = 0, type;
      if (have < 2)
        break;
      while (i < have && i < 5) {
        len |= (size_t)(buf[i] & 0x7f) << shift;
        shift += 7;
        if (!(buf[i++] & 0x80))
          break;
      }
      if (i >= have && (buf[i - 1] & 0x80))
        break; /* the length is not complete yet */
      if (have < i + len) {
        if (i + len > sizeof(buf))
          return; /* larger than we relay: give up on this client */
        break;
      }
      type = buf[0] >> 4;
      if (type == 3 && swallow &&
          memmem(buf, i + len, swallow, strlen(swallow))) {
        printf("swallowed PUBLISH %lu\n", ++*cuts);
        fflush(stdout);
      } else if (write_all(broker, buf, i + len) != 0) {
        return;
      }
      memmove(buf, buf + i + len, have - (i + len));
      have -= i + len;
      if (type == 3 && !swallow) {
        (*cuts)++;
        printf("cut after PUBLISH %lu\n", *cuts);
        fflush(stdout);
        usleep(50 * 1000); /* let the broker read it */
        return;
      }
    }
  }
}

int main(int argc, char **argv)
{
  int lfd, seconds;
  time_t end;
  unsigned long cuts = 0;

  if (argc < 3) {
    fprintf(stderr,
            "usage: mqttcut LISTEN_PORT BROKER_PORT [SECONDS [SWALLOW]]\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  seconds = argc > 3 ? atoi(argv[3]) : 300;
  end = time(NULL) + seconds;
  lfd = listen_on(atoi(argv[1]));
  while (time(NULL) < end) {
    struct pollfd p = {lfd, POLLIN, 0};
    int client, broker;
    if (poll(&p, 1, 1000) <= 0)
      continue;
    if ((client = accept(lfd, NULL, NULL)) < 0)
      continue;
    if ((broker = connect_to(atoi(argv[2]))) < 0) {
      close(client);
      continue;
    }
    relay(client, broker, argc > 4 ? argv[4] : NULL, &cuts);
    close(client);
    close(broker);
  }
  close(lfd);
  return 0;
}
