// Only the C that Swift cannot import: memfd_create, the CMSG_* macros needed to
// pass one file descriptor with SCM_RIGHTS, fork for the private tmpfs, and zlib (whose stream
// set-up is macros). All logic lives in Swift.
#ifndef CTRELLIS_SHIM_H
#define CTRELLIS_SHIM_H

#include <stddef.h>
#include <sys/types.h>

/// memfd_create(name, MFD_CLOEXEC [| MFD_HUGETLB if huge]). Returns -1 and sets errno on failure.
int trellis_memfd_create(const char *name, int huge);

/// fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length).
int trellis_punch_hole(int fd, off_t offset, off_t length);

/// Sends `byte` plus exactly one fd in one SCM_RIGHTS control message (MSG_NOSIGNAL).
/// Returns bytes sent (1) or -1 with errno set.
ssize_t trellis_send_fd(int socket, int fd, unsigned char byte);

/// Receives one data byte and at most one fd (MSG_CMSG_CLOEXEC). On success returns
/// bytes received (0 on EOF) and stores the fd (or -1) in *fd_out. Extra fds and
/// truncated control data are closed and reported as -1 with errno = EPROTO.
ssize_t trellis_recv_fd(int socket, int *fd_out, unsigned char *byte_out);

/// accept4(socket, NULL, NULL, SOCK_CLOEXEC) (glibc declares it only under _GNU_SOURCE).
int trellis_accept_cloexec(int socket);

/// Caps glibc malloc arenas (mallopt M_ARENA_MAX).
void trellis_limit_malloc_arenas(int arenas);

/// Returns free heap pages to the OS (malloc_trim(0)).
void trellis_malloc_trim(void);

/// Gives the calling thread the lowest CPU priority (nice 19): setpriority needs the
/// thread id, and glibc's gettid is not visible to Swift.
void trellis_lower_thread_priority(void);

/// The calling thread's voluntary context switches (getrusage(RUSAGE_THREAD).ru_nvcsw),
/// -1 on failure. RUSAGE_THREAD is a GNU extension Swift's Glibc module does not import.
long trellis_thread_voluntary_switches(void);

/// Names the calling thread (PR_SET_NAME: the first 15 bytes show in /proc and debuggers).
void trellis_set_thread_name(const char *name);

/// The peer's pid from SO_PEERCRED, or -1.
int trellis_peer_pid(int socket);

/// eventfd(2), close-on-exec and non-blocking: a counter one thread writes to wake another.
int trellis_eventfd(void);

/// POLLRDHUP (the peer closed its end), which Glibc's Swift module leaves out.
extern const short trellis_pollrdhup;

/// Stages of trellis_private_tmpfs_file, for the error it reports.
enum {
    TRELLIS_TMPFS_OK = 0,
    TRELLIS_TMPFS_FORK = 1,
    TRELLIS_TMPFS_UNSHARE = 2,
    TRELLIS_TMPFS_IDMAP = 3,
    TRELLIS_TMPFS_PRIVATE = 4,
    TRELLIS_TMPFS_MOUNT = 5,
    TRELLIS_TMPFS_OPEN = 6,
    TRELLIS_TMPFS_TRUNCATE = 7,
};

/// An unnamed file of `size` bytes on a tmpfs mounted with `options` (e.g.
/// "huge=within_size,size=…") in a private mount namespace, which a short-lived child
/// (fork: Swift cannot) sets up — with a user namespace when the caller lacks
/// CAP_SYS_ADMIN. Returns the fd (close-on-exec), or -1 with errno and the failing stage
/// in *stage_out.
int trellis_private_tmpfs_file(const char *options, off_t size, int *stage_out);

/// crypt(3) through libxcrypt's reentrant crypt_rn: hashes `key` with the method and salt
/// of `setting` (`$2y$…` bcrypt, `$1$`/`$5$`/`$6$`, traditional DES) into `out`.
/// Returns the length written, or -1 when the method is unknown or the setting invalid.
int trellis_crypt(const char *key, const char *setting, char *out, size_t out_size);

/// zlib's deflate of `src` (zlib format: the dictionary's Adler-32 in the header, the
/// data's at the end), at the default level, with the preset `dictionary` (may be empty),
/// into `dst`. Returns the compressed length, or -1 when it
/// does not fit in `dst_size` or zlib fails. (zlib's stream set-up is macros Swift cannot
/// import.)
long trellis_deflate(const unsigned char *src, size_t src_size, const unsigned char *dictionary,
                         size_t dictionary_size, unsigned char *dst, size_t dst_size);

/// The inverse of trellis_deflate: inflates `src` into `dst`. Returns the inflated length,
/// or -1 when the input is corrupt (checksum), incomplete, made with another dictionary, or
/// inflates to more than `dst_size`.
long trellis_inflate(const unsigned char *src, size_t src_size, const unsigned char *dictionary,
                         size_t dictionary_size, unsigned char *dst, size_t dst_size);

#endif
