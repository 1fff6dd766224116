/* The CPU an fdatasync costs the syncing thread: N times a 4 KiB write + sync of a
 * preallocated file, wall and CPU (getrusage) per sync (docs/benchmarks.md section 8).
 * MODE picks how the write is made durable:
 *   0  pwrite + fdatasync (what the log does)      1  pwritev2(RWF_DSYNC)
 *   2  O_DIRECT pwrite + fdatasync                 3  O_DIRECT|O_DSYNC pwrite
 * cc -O2 bench/fsync_cpu.c -o /tmp/fsync_cpu && /tmp/fsync_cpu DATA_DIR/probe.dat 2000 [MODE] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static double cpu_us(void)
{
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e6 + r.ru_utime.tv_usec + r.ru_stime.tv_usec;
}

static double wall_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"pwrite + fdatasync", "pwritev2 RWF_DSYNC",
                                        "O_DIRECT pwrite + fdatasync", "O_DIRECT|O_DSYNC pwrite"};
    if (argc < 3) {
        fprintf(stderr, "usage: fsync_cpu FILE N [MODE 0-3]\n");
        return 2;
    }
    int n = atoi(argv[2]);
    int mode = argc > 3 ? atoi(argv[3]) : 0;
    if (n <= 0 || mode < 0 || mode > 3) {
        fprintf(stderr, "fsync_cpu: N > 0, MODE 0-3\n");
        return 2;
    }
    char *buf;
    if (posix_memalign((void **)&buf, 4096, 4096) != 0)
        return 1;
    memset(buf, 1, 4096);
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    for (int i = 0; fd >= 0 && i < 1024; i++) /* preallocate: no size change later */
        if (pwrite(fd, buf, 4096, (off_t)i * 4096) != 4096)
            return 1;
    if (fd < 0 || fsync(fd) != 0 || close(fd) != 0) {
        perror(argv[1]);
        return 1;
    }
    fd = open(argv[1], O_RDWR | (mode >= 2 ? O_DIRECT : 0) | (mode == 3 ? O_DSYNC : 0));
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    double c0 = cpu_us(), t0 = wall_us();
    for (int i = 0; i < n; i++) {
        off_t off = (off_t)(i % 1024) * 4096;
        struct iovec v = {buf, 4096};
        ssize_t k = mode == 1 ? pwritev2(fd, &v, 1, off, RWF_DSYNC) : pwrite(fd, buf, 4096, off);
        if (k != 4096 || ((mode == 0 || mode == 2) && fdatasync(fd) != 0)) {
            perror("write/sync");
            return 1;
        }
    }
    double cpu = cpu_us() - c0, wall = wall_us() - t0;
    printf("%d syncs, %s: wall %.0f us each, CPU (this thread) %.1f us each\n", n, names[mode],
           wall / n, cpu / n);
    close(fd);
    unlink(argv[1]);
    free(buf);
    return 0;
}
