/* Page-cache attacks on a kmsgfs kmsg file (docs/security.md, threat model T1, T2).
 *
 *   pagecache wedge FILE      lseek(SEEK_END) + fadvise(WILLNEED) + readahead, then exit
 *   pagecache wedge-far FILE  pread at 2^32, SEEK_END, readahead, then exit
 *   pagecache steal FILE N    N times: grow the cached size with a pwrite at 1 MiB and a
 *                             SEEK_END, then sendfile, splice and mmap(MAP_PRIVATE) page 0;
 *                             every byte received goes to stdout, one status line per method
 *                             to stderr
 *   pagecache sendfile FILE   sendfile(stdout, FILE, NULL, 65536) once; prints the result
 *   pagecache noise FILE N    N rounds of every request fuser answers by default with a log
 *                             line (ioctl, fsync, fallocate, mkdir, mknod, unlink, rename,
 *                             link, symlink, setxattr, flock) against FILE and its directory
 *
 * Every call that can block is bounded by alarm(): an attacker that gets stuck is itself a
 * finding, reported by the test through the process state. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libgen.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <termios.h>
#include <sys/sendfile.h>
#include <unistd.h>

static sigjmp_buf bus_jmp;
static void on_bus(int sig) { (void)sig; siglongjmp(bus_jmp, 1); }

static int open_or_die(const char *path, int flags) {
    int fd = open(path, flags);
    if (fd < 0) { fprintf(stderr, "open %s: %s\n", path, strerror(errno)); exit(2); }
    return fd;
}

static void wedge(const char *path, int far) {
    /* Blocking, so that a READ the daemon cannot answer would be parked. */
    int fd = open_or_die(path, O_RDONLY);
    if (far) {
        char b;
        fcntl(fd, F_SETFL, O_NONBLOCK);
        (void)pread(fd, &b, 1, (off_t)1 << 32);
        fcntl(fd, F_SETFL, 0);
    }
    off_t end = lseek(fd, 0, SEEK_END);
    int a = posix_fadvise(fd, 0, 4096, POSIX_FADV_WILLNEED);
    ssize_t r = readahead(fd, 0, 4096);
    fprintf(stderr, "seek_end=%lld fadvise=%d readahead=%zd\n", (long long)end, a, r);
}

static void steal(const char *path, int rounds) {
    int fd = open_or_die(path, O_RDWR | O_NONBLOCK);
    int p[2];
    if (pipe(p) < 0) { perror("pipe"); exit(2); }
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    fcntl(p[1], F_SETFL, O_NONBLOCK);
    signal(SIGBUS, on_bus);
    static char buf[65536];
    for (int i = 0; i < rounds; i++) {
        (void)pwrite(fd, "<6>grow\n", 8, 1 << 20);
        off_t end = lseek(fd, 0, SEEK_END);
        /* sendfile from offset 0 into the pipe, then drain the pipe to stdout. */
        off_t off = 0;
        ssize_t s = sendfile(p[1], fd, &off, 65536);
        int se = s < 0 ? errno : 0;
        ssize_t n;
        while ((n = read(p[0], buf, sizeof buf)) > 0) fwrite(buf, 1, n, stdout);
        loff_t off2 = 0;
        ssize_t sp = splice(fd, &off2, p[1], NULL, 65536, SPLICE_F_NONBLOCK);
        int spe = sp < 0 ? errno : 0;
        while ((n = read(p[0], buf, sizeof buf)) > 0) fwrite(buf, 1, n, stdout);
        const char *mm = "mapped";
        void *m = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            mm = strerror(errno);
        } else {
            if (sigsetjmp(bus_jmp, 1) == 0) {
                static char page[4096];
                alarm(5);
                memcpy(page, m, sizeof page); /* fault in user space: SIGBUS, not EFAULT */
                alarm(0);
                fwrite(page, 1, sizeof page, stdout);
            } else {
                mm = "SIGBUS";
            }
            munmap(m, 4096);
        }
        if (i == 0 || i == rounds - 1)
            fprintf(stderr, "round %d: seek_end=%lld sendfile=%zd(%s) splice=%zd(%s) mmap=%s\n", i,
                    (long long)end, s, strerror(se), sp, strerror(spe), mm);
    }
    fflush(stdout);
}

static void do_sendfile(const char *path) {
    int fd = open_or_die(path, O_RDONLY | O_NONBLOCK);
    ssize_t s = sendfile(1, fd, NULL, 65536);
    fprintf(stderr, "sendfile=%zd errno=%d (%s)\n", s, s < 0 ? errno : 0, s < 0 ? strerror(errno) : "-");
}

static void noise(const char *path, int rounds) {
    int fd = open_or_die(path, O_RDWR | O_NONBLOCK);
    char dir[4096], a[4200], b[4200];
    snprintf(dir, sizeof dir, "%s", path);
    char *d = dirname(dir);
    snprintf(a, sizeof a, "%s/x", d);
    snprintf(b, sizeof b, "%s/y", d);
    struct termios t;
    int n, tty = 0;
    for (int i = 0; i < rounds; i++) {
        if (ioctl(fd, TCGETS, &t) == 0) tty++;
        (void)ioctl(fd, FIONREAD, &n);
        (void)fsync(fd);
        (void)fallocate(fd, 0, 0, 4096);
        (void)mkdir(a, 0755);
        (void)mknod(a, S_IFREG | 0644, 0);
        (void)unlink(a);
        (void)rename(path, b);
        (void)link(path, a);
        (void)symlink(path, a);
        (void)setxattr(path, "user.x", "1", 1, 0);
        (void)flock(fd, LOCK_EX | LOCK_NB);
        (void)flock(fd, LOCK_UN);
    }
    fprintf(stderr, "isatty=%d after %d rounds\n", tty, rounds);
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: pagecache MODE FILE [N]\n"); return 2; }
    alarm(20);
    if (!strcmp(argv[1], "wedge")) wedge(argv[2], 0);
    else if (!strcmp(argv[1], "wedge-far")) wedge(argv[2], 1);
    else if (!strcmp(argv[1], "steal")) steal(argv[2], argc > 3 ? atoi(argv[3]) : 1);
    else if (!strcmp(argv[1], "sendfile")) do_sendfile(argv[2]);
    else if (!strcmp(argv[1], "noise")) noise(argv[2], argc > 3 ? atoi(argv[3]) : 1);
    else { fprintf(stderr, "unknown mode %s\n", argv[1]); return 2; }
    return 0;
}
