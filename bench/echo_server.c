/* The physical-limit anchor for a request/reply server on this machine: accepts one
 * connection on a UNIX socket and answers every vineyard-framed request (u64le length
 * + body) with a fixed reply of the given body size, with one recv per request when
 * the frame is there and one send per reply. No parsing, no allocation, no threads.
 * Usage: echo_server PATH REPLY_BODY_BYTES. Prints READY once listening; exits when
 * the client hangs up. Built and run by daemon_bench.py. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static char in[1 << 16];

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    size_t rep = (size_t)atol(argv[2]);
    char *out = malloc(8 + rep);
    uint64_t len = rep;
    memcpy(out, &len, 8);
    memset(out + 8, 'x', rep);

    int srv = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(argv[1]) >= sizeof addr.sun_path) return 2;
    strcpy(addr.sun_path, argv[1]);
    if (bind(srv, (struct sockaddr *)&addr, sizeof addr) || listen(srv, 1)) return 1;
    printf("READY\n");
    fflush(stdout);
    int c = accept(srv, NULL, NULL);
    if (c < 0) return 1;

    size_t have = 0;
    for (;;) {
        ssize_t n = recv(c, in + have, sizeof in - have, 0);
        if (n <= 0) break;
        have += (size_t)n;
        /* Answer every complete frame in the buffer; keep a partial one. */
        size_t at = 0;
        while (have - at >= 8) {
            uint64_t body;
            memcpy(&body, in + at, 8);
            if (body > sizeof in - 8) return 1;
            if (have - at < 8 + body) break;
            at += 8 + body;
            for (size_t sent = 0; sent < 8 + rep;) {
                ssize_t m = send(c, out + sent, 8 + rep - sent, MSG_NOSIGNAL);
                if (m <= 0) return 0;
                sent += (size_t)m;
            }
        }
        memmove(in, in + at, have - at);
        have -= at;
    }
    unlink(argv[1]);
    return 0;
}
