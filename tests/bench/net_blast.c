/* Host-side frame sender for the virtio-net rx bench (tests/bench/net_bench.py).
 *
 *   net_blast IFNAME DST_MAC SIZE SECS
 *
 * Writes one prebuilt IPv4/UDP frame of SIZE bytes (Ethernet header included, no FCS)
 * from 10.0.2.1:5001 to 10.0.2.15:9 onto IFNAME through an AF_PACKET socket, in
 * sendmmsg batches, for SECS seconds, as fast as it can. A raw socket rather than a
 * UDP one: no routing, neighbour or UDP stack work per frame, so the sender is far
 * faster than a VMM's receive path. PACKET_QDISC_BYPASS hands frames straight to the
 * TAP driver, which drops (and counts in tx_dropped) what its queue to the VMM cannot
 * hold instead of pushing back, so the VMM's receive rate is what the guest counts.
 * A refused frame means that queue (txqueuelen frames, 1000 by default) is full: the
 * sender then sleeps 100 us, far less than the queue takes to drain at any rate seen
 * here, so it leaves the CPU to the VMM (the bench host has two cores) instead of
 * spinning on errors, and the queue never runs dry.
 *
 * SIGTERM or SIGINT ends it early (the bench stops it once the guest has counted).
 * Prints "sent=N secs=S full=K" (frames the TAP accepted, times it was full). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static uint16_t csum(const uint8_t *p, size_t n)
{
    uint32_t s = 0;
    for (size_t i = 0; i + 1 < n; i += 2)
        s += (uint32_t)p[i] << 8 | p[i + 1];
    if (n & 1)
        s += (uint32_t)p[n - 1] << 8;
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int parse_mac(const char *s, uint8_t *m)
{
    return sscanf(s, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) == 6 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s IFNAME DST_MAC SIZE SECS\n", argv[0]);
        return 2;
    }
    const char *ifname = argv[1];
    uint8_t dst[6], src[6] = {0};
    if (parse_mac(argv[2], dst)) {
        fprintf(stderr, "net_blast: bad MAC %s\n", argv[2]);
        return 2;
    }
    int size = atoi(argv[3]);
    double secs = atof(argv[4]);
    if (size < 60)
        size = 60;
    if (size > 1514)
        size = 1514;
    unsigned idx = if_nametoindex(ifname);
    if (!idx) {
        perror("net_blast: if_nametoindex");
        return 1;
    }
    char path[128];
    snprintf(path, sizeof path, "/sys/class/net/%s/address", ifname);
    FILE *f = fopen(path, "r");
    if (f) {
        char buf[32];
        if (fgets(buf, sizeof buf, f))
            parse_mac(buf, src);
        fclose(f);
    }

    uint8_t fr[1514];
    memset(fr, 0, sizeof fr);
    memcpy(fr, dst, 6);
    memcpy(fr + 6, src, 6);
    fr[12] = 0x08;
    int ipl = size - 14;
    fr[14] = 0x45;
    fr[16] = ipl >> 8;
    fr[17] = ipl & 0xff;
    fr[20] = 0x40; /* DF */
    fr[22] = 64;
    fr[23] = 17;
    uint8_t sip[4] = {10, 0, 2, 1}, dip[4] = {10, 0, 2, 15};
    memcpy(fr + 26, sip, 4);
    memcpy(fr + 30, dip, 4);
    uint16_t c = csum(fr + 14, 20);
    fr[24] = c >> 8;
    fr[25] = c & 0xff;
    fr[34] = 5001 >> 8;
    fr[35] = 5001 & 0xff;
    fr[37] = 9;
    fr[38] = (ipl - 20) >> 8;
    fr[39] = (ipl - 20) & 0xff;
    /* UDP checksum 0: none (RFC 768) */
    for (int i = 42; i < size; i++)
        fr[i] = (uint8_t)i;

    int s = socket(AF_PACKET, SOCK_RAW, 0); /* protocol 0: send only, nothing queued to us */
    if (s < 0) {
        perror("net_blast: socket");
        return 1;
    }
    int one = 1;
    setsockopt(s, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);
    int sndbuf = 4 << 20;
    setsockopt(s, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_ifindex = (int)idx, .sll_halen = 6,
                              .sll_protocol = htons(ETH_P_IP)};
    memcpy(sll.sll_addr, dst, 6);

    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = fr;
        iov[i].iov_len = (size_t)size;
        msgs[i].msg_hdr.msg_name = &sll;
        msgs[i].msg_hdr.msg_namelen = sizeof sll;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    unsigned long long sent = 0, errors = 0;
    double t0 = now(), end = t0 + secs, t = t0;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    while (t < end && !stop) {
        for (int k = 0; k < 16; k++) {
            int n = sendmmsg(s, msgs, BATCH, 0);
            if (n > 0)
                sent += (unsigned)n;
            if (n < BATCH) {
                struct timespec nap = {0, 100000};
                errors++;
                nanosleep(&nap, NULL);
                break;
            }
        }
        t = now();
    }
    printf("sent=%llu secs=%.3f full=%llu\n", sent, t - t0, errors);
    close(s);
    return 0;
}
