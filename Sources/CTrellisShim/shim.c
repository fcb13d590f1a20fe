#define _GNU_SOURCE
#include <sys/eventfd.h>
#include <poll.h>
#include "CTrellisShim.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <malloc.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <crypt.h>
#include <limits.h>
#include <zlib.h>

int trellis_memfd_create(const char *name, int huge) {
    unsigned int flags = MFD_CLOEXEC;
    if (huge) flags |= MFD_HUGETLB;
    return memfd_create(name, flags);
}

int trellis_punch_hole(int fd, off_t offset, off_t length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
}

/* Sends `length` bytes plus, when fd >= 0, that one fd in one SCM_RIGHTS message
   (MSG_NOSIGNAL, EINTR retried). Only system calls: usable in a forked child too. */
static ssize_t send_with_fd(int socket, const void *data, size_t length, int fd) {
    struct iovec iov = { .iov_base = (void *)data, .iov_len = length };
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int))]; } control;
    memset(&control, 0, sizeof(control));
    struct msghdr msg = { 0 };
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (fd >= 0) {
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof(control.buf);
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
    }
    ssize_t n;
    do { n = sendmsg(socket, &msg, MSG_NOSIGNAL); } while (n < 0 && errno == EINTR);
    return n;
}

ssize_t trellis_send_fd(int socket, int fd, unsigned char byte) {
    return send_with_fd(socket, &byte, 1, fd);
}

/* Receives up to `length` bytes and at most one fd (MSG_CMSG_CLOEXEC); extra fds and
   truncated control data are closed and reported as -1 with errno = EPROTO. */
static ssize_t recv_with_fd(int socket, void *data, size_t length, int *fd_out) {
    *fd_out = -1;
    struct iovec iov = { .iov_base = data, .iov_len = length };
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int) * 4)]; } control;
    struct msghdr msg = { 0 };
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    ssize_t n;
    do { n = recvmsg(socket, &msg, MSG_CMSG_CLOEXEC); } while (n < 0 && errno == EINTR);
    if (n < 0) return n;
    int got = 0, extra = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *fds = (int *)CMSG_DATA(c);
        for (size_t i = 0; i < count; i++) {
            int f;
            memcpy(&f, &fds[i], sizeof(int));
            if (!got) { *fd_out = f; got = 1; } else { close(f); extra = 1; }
        }
    }
    if (extra || (msg.msg_flags & MSG_CTRUNC)) {
        if (*fd_out >= 0) close(*fd_out);
        *fd_out = -1;
        errno = EPROTO;
        return -1;
    }
    return n;
}

ssize_t trellis_recv_fd(int socket, int *fd_out, unsigned char *byte_out) {
    return recv_with_fd(socket, byte_out, 1, fd_out);
}

void trellis_lower_thread_priority(void) {
    (void)setpriority(PRIO_PROCESS, (id_t)gettid(), 19);
}

long trellis_thread_voluntary_switches(void) {
    struct rusage usage;
    if (getrusage(RUSAGE_THREAD, &usage) != 0) return -1;
    return usage.ru_nvcsw;
}

void trellis_set_thread_name(const char *name) {
    (void)prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}

int trellis_eventfd(void) {
    return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

const short trellis_pollrdhup = POLLRDHUP;

int trellis_peer_pid(int socket) {
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
    return cred.pid;
}

int trellis_accept_cloexec(int socket) {
    return accept4(socket, NULL, NULL, SOCK_CLOEXEC);
}

void trellis_limit_malloc_arenas(int arenas) {
    mallopt(M_ARENA_MAX, arenas);
}

void trellis_malloc_trim(void) {
    malloc_trim(0);
}

/* ---- A file on a private tmpfs mounted with huge=within_size ----
 *
 * Swift cannot fork, and only a single-threaded process may enter a new user namespace,
 * so this runs in a short-lived child that makes nothing but system calls (async-signal
 * safe after fork in a multi-threaded parent): enter a private mount namespace (with a
 * user namespace when unprivileged), mount a tmpfs over a directory there, open an
 * unnamed O_TMPFILE in it, size it, pass its descriptor back and exit. The mount lives on
 * only through that descriptor; nobody else ever sees it.
 */

#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>

/* Decimal digits of v into buf (no locale, no allocation); returns the length. */
static int put_decimal(char *buf, unsigned long long v) {
    char tmp[24];
    int n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    for (int i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
    return n;
}

static int write_file(const char *path, const char *text, size_t length) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = write(fd, text, length);
    int err = n < 0 ? errno : EIO;
    close(fd);
    if (n == (ssize_t)length) return 0;
    errno = err;
    return -1;
}

/* "0 <id> 1" into /proc/self/<which>_map. */
static int map_self(const char *path, unsigned long long id) {
    char line[40] = "0 ";
    int n = 2 + put_decimal(line + 2, id);
    line[n++] = ' ';
    line[n++] = '1';
    return write_file(path, line, (size_t)n);
}

static void report_and_exit(int channel, unsigned char stage, int err, int fd) {
    int payload[2] = { stage, err };
    (void)send_with_fd(channel, payload, sizeof(payload), fd);
    _exit(0);
}

static void private_tmpfs_child(int channel, const char *options, off_t size, uid_t uid, gid_t gid) {
    if (unshare(CLONE_NEWNS) != 0) {
        if (errno != EPERM) report_and_exit(channel, TRELLIS_TMPFS_UNSHARE, errno, -1);
        /* Unprivileged: become root of a new user namespace that maps only ourselves. */
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) report_and_exit(channel, TRELLIS_TMPFS_UNSHARE, errno, -1);
        if (write_file("/proc/self/setgroups", "deny", 4) != 0 || map_self("/proc/self/uid_map", uid) != 0
            || map_self("/proc/self/gid_map", gid) != 0)
            report_and_exit(channel, TRELLIS_TMPFS_IDMAP, errno, -1);
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) report_and_exit(channel, TRELLIS_TMPFS_PRIVATE, errno, -1);
    /* Any existing directory will do as the mount point: the mount is private to this child. */
    static const char *const points[] = { "/tmp", "/mnt", "/dev", "/run", "/var" };
    const char *point = NULL;
    int err = ENOENT;
    for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
        if (mount("trellis", points[i], "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, options) == 0) {
            point = points[i];
            break;
        }
        err = errno;
    }
    if (point == NULL) report_and_exit(channel, TRELLIS_TMPFS_MOUNT, err, -1);
    int fd = open(point, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) report_and_exit(channel, TRELLIS_TMPFS_OPEN, errno, -1);
    int rc;
    do { rc = ftruncate(fd, size); } while (rc != 0 && errno == EINTR);
    if (rc != 0) report_and_exit(channel, TRELLIS_TMPFS_TRUNCATE, errno, -1);
    report_and_exit(channel, TRELLIS_TMPFS_OK, 0, fd);
}

int trellis_private_tmpfs_file(const char *options, off_t size, int *stage_out) {
    *stage_out = TRELLIS_TMPFS_FORK;
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) return -1;
    /* A user namespace's one-line map must name the creator's effective ids. */
    uid_t uid = geteuid();
    gid_t gid = getegid();
    pid_t child = fork();
    if (child < 0) {
        int e = errno;
        close(pair[0]);
        close(pair[1]);
        errno = e;
        return -1;
    }
    if (child == 0) {
        close(pair[0]);
        private_tmpfs_child(pair[1], options, size, uid, gid);
        _exit(1);
    }
    close(pair[1]);
    int payload[2] = { TRELLIS_TMPFS_FORK, EPROTO };
    int fd = -1;
    ssize_t n = recv_with_fd(pair[0], payload, sizeof(payload), &fd);
    int recv_errno = errno;
    close(pair[0]);
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {}
    if (n != (ssize_t)sizeof(payload)) {
        payload[0] = TRELLIS_TMPFS_FORK;
        payload[1] = n < 0 ? recv_errno : EPROTO;
    }
    *stage_out = payload[0];
    if (payload[0] == TRELLIS_TMPFS_OK && fd >= 0) return fd;
    if (fd >= 0) close(fd);
    errno = payload[1] ? payload[1] : EPROTO;
    return -1;
}

int trellis_crypt(const char *key, const char *setting, char *out, size_t out_size) {
    struct crypt_data *data = calloc(1, sizeof *data);  // ~32 KiB: not on a thread's stack
    if (!data) return -1;
    int n = -1;
    const char *r = crypt_rn(key, setting, data, (int)sizeof *data);
    if (r && r[0] != '*') {
        size_t len = strlen(r);
        if (len + 1 <= out_size) {
            memcpy(out, r, len + 1);
            n = (int)len;
        }
    }
    explicit_bzero(data, sizeof *data);
    free(data);
    return n;
}

long trellis_deflate(const unsigned char *src, size_t src_size, const unsigned char *dictionary,
                         size_t dictionary_size, unsigned char *dst, size_t dst_size) {
    if (src_size > UINT_MAX || dst_size > UINT_MAX || dictionary_size > UINT_MAX) return -1;
    // A window (and hash table) no larger than the input and dictionary need: zlib's
    // default state is ~270 KB, allocated (mmap'd) and its hash cleared per stream, which
    // made deflating a DataFrame's ~50 small records cost ~50 us each. Any inflater
    // reads the result (the header states the window).
    int window_bits = 9;
    while (window_bits < 15 && ((size_t)1 << window_bits) < src_size + dictionary_size) window_bits++;
    int mem_level = window_bits - 7;  // hash table as large as the window
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, window_bits, mem_level, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    if (dictionary_size > 0 && deflateSetDictionary(&z, dictionary, (uInt)dictionary_size) != Z_OK) {
        deflateEnd(&z);
        return -1;
    }
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)src_size;
    z.next_out = dst;
    z.avail_out = (uInt)dst_size;
    int rc = deflate(&z, Z_FINISH);
    long out = rc == Z_STREAM_END ? (long)z.total_out : -1;
    deflateEnd(&z);
    return out;
}

long trellis_inflate(const unsigned char *src, size_t src_size, const unsigned char *dictionary,
                         size_t dictionary_size, unsigned char *dst, size_t dst_size) {
    if (src_size > UINT_MAX || dst_size > UINT_MAX || dictionary_size > UINT_MAX) return -1;
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 15) != Z_OK) return -1;
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)src_size;
    z.next_out = dst;
    z.avail_out = (uInt)dst_size;
    int rc = inflate(&z, Z_FINISH);
    if (rc == Z_NEED_DICT) {
        // the stream names its dictionary (by Adler-32): a different one is refused here
        if (dictionary_size == 0 || inflateSetDictionary(&z, dictionary, (uInt)dictionary_size) != Z_OK) {
            inflateEnd(&z);
            return -1;
        }
        rc = inflate(&z, Z_FINISH);
    }
    long out = rc == Z_STREAM_END && z.avail_in == 0 ? (long)z.total_out : -1;
    inflateEnd(&z);
    return out;
}
