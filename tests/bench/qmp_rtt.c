/* QMP round-trip timer for `make bench`: a C client, so the client's own
 * cost stays far below the server's.  Usage: qmp_rtt SOCKET ROUNDS
 * Connects, negotiates, then sends ROUNDS query-status commands one at a
 * time and prints "median_ns p99_ns". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static char buf[1 << 16];
static size_t have;

/* Reads one CRLF-terminated message; returns 0 on EOF. */
static int read_line(int fd, char *line, size_t cap) {
    for (;;) {
        char *nl = memchr(buf, '\n', have);
        if (nl) {
            size_t n = (size_t)(nl - buf) + 1;
            size_t c = n < cap - 1 ? n : cap - 1;
            memcpy(line, buf, c);
            line[c] = 0;
            memmove(buf, buf + n, have - n);
            have -= n;
            return 1;
        }
        ssize_t r = read(fd, buf + have, sizeof buf - have);
        if (r <= 0) return 0;
        have += (size_t)r;
    }
}

/* Sends a command and waits for its reply, skipping events. */
static int roundtrip(int fd, const char *cmd, char *line, size_t cap) {
    if (write(fd, cmd, strlen(cmd)) < 0) return 0;
    do {
        if (!read_line(fd, line, cap)) return 0;
    } while (strstr(line, "\"event\""));
    return 1;
}

static int cmp(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: qmp_rtt SOCKET ROUNDS\n");
        return 2;
    }
    int rounds = atoi(argv[2]);
    if (rounds < 1) rounds = 1;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("connect");
        return 1;
    }
    char line[8192];
    if (!read_line(fd, line, sizeof line) || !roundtrip(fd, "{\"execute\":\"qmp_capabilities\"}\n", line, sizeof line)) {
        fprintf(stderr, "negotiation failed\n");
        return 1;
    }
    long long *ns = malloc(sizeof *ns * (size_t)rounds);
    for (int i = 0; i < rounds; i++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (!roundtrip(fd, "{\"execute\":\"query-status\"}\n", line, sizeof line)) {
            fprintf(stderr, "connection lost\n");
            return 1;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        ns[i] = (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    }
    qsort(ns, (size_t)rounds, sizeof *ns, cmp);
    printf("%lld %lld\n", ns[rounds / 2], ns[(int)(rounds * 0.99)]);
    return 0;
}
