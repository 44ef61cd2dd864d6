/*
 * cmdpath_wire.c - when each setExtDO command is on the wire: a packet
 * capture on the loopback interface for bench/cmdpath.sh.
 *
 *   cmdpath_wire PORT BASE_SEC OUTFILE SECONDS
 *
 * Captures every IPv4 TCP segment sent to 127.0.0.1:PORT (the broker) on
 * "lo" (an AF_PACKET socket with a classic BPF filter, so nothing else on
 * the machine costs it a wake-up; needs CAP_NET_RAW) and, for every MQTT
 * PUBLISH of a commandMessage in it, appends a line to OUTFILE:
 *
 *   W <ns> <resourceId> <output> <status> <correlationId>
 *
 * <ns> is the kernel's CLOCK_REALTIME timestamp of the segment, in
 * nanoseconds since BASE_SEC (seconds since the epoch), so that the
 * benchmark's awk can do exact arithmetic with doubles. It is taken when the
 * loopback device's transmit hands the segment to the receive queue
 * (netif_rx), inside the sender's write(): what "on the wire" means here.
 * One
 * segment may hold several commands (each gets a line, same time); a command
 * is recognised by its JSON, so that it does not matter how MQTT packets and
 * TCP segments line up, as long as a command is not split across segments
 * (on loopback, with its 64 KiB MTU, the benchmark's are never).
 *
 * Creates OUTFILE.ready once the filter is attached. Runs SECONDS at most,
 * or until SIGTERM/SIGINT; at exit prints to stderr how many packets the
 * kernel dropped (PACKET_STATISTICS), and exits 1 if it dropped any.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <linux/filter.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SNAPLEN 65536

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
  (void)sig;
  stop = 1;
}

/* The integer after `key` within [p, end), or -1 when absent. */
static long long field_int(const char *p, const char *end, const char *key)
{
  const char *k = memmem(p, (size_t)(end - p), key, strlen(key));
  if (!k)
    return -1;
  k += strlen(key);
  if (k >= end || *k < '0' || *k > '9')
    return -1;
  long long v = 0;
  for (; k < end && *k >= '0' && *k <= '9'; k++)
    v = v * 10 + (*k - '0');
  return v;
}

/* Every commandMessage in one TCP payload: one line each. */
static void scan_payload(FILE *out, int64_t ns, const char *p, size_t len)
{
  static const char mark[] = "\"commandMessage\"";
  const char *end = p + len;

  while (p < end) {
    const char *m = memmem(p, (size_t)(end - p), mark, sizeof(mark) - 1);
    if (!m)
      break;
    const char *next =
        memmem(m + 1, (size_t)(end - m - 1), mark, sizeof(mark) - 1);
    const char *stop_at = next ? next : end;
    char corr[80] = "-";
    const char *c = memmem(m, (size_t)(stop_at - m), "\"correlationId\":\"",
                           17);
    if (c) {
      c += 17;
      size_t n = 0;
      while (c + n < stop_at && c[n] != '"' && n < sizeof(corr) - 1)
        n++;
      memcpy(corr, c, n);
      corr[n] = '\0';
    }
    long long res = field_int(m, stop_at, "\"resourceId\":");
    long long o = field_int(m, stop_at, "\"output\":");
    long long s = field_int(m, stop_at, "\"status\":");
    if (res >= 0 && o >= 0 && s >= 0)
      fprintf(out, "W %" PRId64 " %lld %lld %lld %s\n", ns, res, o, s, corr);
    p = stop_at;
  }
}

int main(int argc, char **argv)
{
  static char buf[SNAPLEN];
  int fd = -1, port, status = 1;
  long base;
  double seconds;
  FILE *out = NULL;
  char ready[4096];

  if (argc != 5) {
    fprintf(stderr, "usage: cmdpath_wire PORT BASE_SEC OUTFILE SECONDS\n");
    return 2;
  }
  port = atoi(argv[1]);
  base = atol(argv[2]);
  seconds = atof(argv[4]);
  if (port <= 0 || port > 65535 || base <= 0 || seconds <= 0) {
    fprintf(stderr, "cmdpath_wire: bad arguments\n");
    return 2;
  }

  /* tcp dst port PORT, on the IP header (SOCK_DGRAM: no link header). */
  struct sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 9),               /* protocol */
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 0, 6),
      BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 6),               /* fragment */
      BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x1fff, 4, 0),
      BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 0),              /* IP hdr len */
      BPF_STMT(BPF_LD | BPF_H | BPF_IND, 2),               /* dst port */
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)port, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SNAPLEN),
      BPF_STMT(BPF_RET | BPF_K, 0),
  };
  struct sock_fprog prog = {sizeof(code) / sizeof(code[0]), code};
  struct sockaddr_ll sll = {0};
  int one = 1, rcvbuf = 8 << 20;

  fd = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_IP));
  if (fd < 0) {
    perror("cmdpath_wire: socket(AF_PACKET) (needs CAP_NET_RAW)");
    goto out;
  }
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_IP);
  sll.sll_ifindex = (int)if_nametoindex("lo");
  if (sll.sll_ifindex == 0 ||
      setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)) != 0 ||
      bind(fd, (struct sockaddr *)&sll, sizeof(sll)) != 0) {
    perror("cmdpath_wire: setting up the capture on lo");
    goto out;
  }
  /* As root, beyond rmem_max; else as much as allowed. */
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) != 0)
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  /* Packets queued before the filter was attached are not filtered. */
  while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) >= 0)
    ;
  if (!(out = fopen(argv[3], "a"))) {
    perror(argv[3]);
    goto out;
  }
  setvbuf(out, NULL, _IOLBF, 0);
  snprintf(ready, sizeof(ready), "%s.ready", argv[3]);
  FILE *r = fopen(ready, "w");
  if (!r || fclose(r) != 0) {
    perror(ready);
    goto out;
  }

  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  struct timespec t0, now;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    struct pollfd pfd = {fd, POLLIN, 0};
    char ctl[256];
    struct iovec iov = {buf, sizeof(buf)};
    struct sockaddr_ll from;
    struct msghdr mh = {0};
    struct timespec ts = {0, 0};
    ssize_t n;

    clock_gettime(CLOCK_MONOTONIC, &now);
    if (stop || (now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9 >=
                    seconds)
      break;
    if (poll(&pfd, 1, 200) <= 0)
      continue;
    mh.msg_name = &from;
    mh.msg_namelen = sizeof(from);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl;
    mh.msg_controllen = sizeof(ctl);
    n = recvmsg(fd, &mh, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR)
        continue;
      perror("cmdpath_wire: recvmsg");
      goto out;
    }
    /* Bound to ETH_P_IP, the socket sees the receive side of lo only;
     * were a transmit copy delivered too, it would be a duplicate. */
    if (from.sll_pkttype == PACKET_OUTGOING)
      continue;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS)
        memcpy(&ts, CMSG_DATA(c), sizeof(ts));
    if (ts.tv_sec == 0)
      clock_gettime(CLOCK_REALTIME, &ts);
    if ((size_t)n < sizeof(struct iphdr))
      continue;
    const struct iphdr *ip = (const struct iphdr *)buf;
    size_t ihl = (size_t)ip->ihl * 4, tot = ntohs(ip->tot_len);
    if (tot > (size_t)n)
      tot = (size_t)n;
    if (ihl + sizeof(struct tcphdr) > tot)
      continue;
    const struct tcphdr *tcp = (const struct tcphdr *)(buf + ihl);
    size_t off = ihl + (size_t)tcp->doff * 4;
    if (off >= tot)
      continue;
    scan_payload(out,
                 (int64_t)(ts.tv_sec - base) * 1000000000 + ts.tv_nsec,
                 buf + off, tot - off);
  }

  struct tpacket_stats st;
  socklen_t sl = sizeof(st);
  if (getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &st, &sl) != 0) {
    perror("cmdpath_wire: PACKET_STATISTICS");
    goto out;
  }
  if (st.tp_drops > 0) {
    fprintf(stderr, "cmdpath_wire: the kernel dropped %u packets\n",
            st.tp_drops);
    goto out;
  }
  status = 0;
out:
  if (out && fclose(out) != 0) {
    perror(argv[3]);
    status = 1;
  }
  if (fd >= 0)
    close(fd);
  return status;
}
