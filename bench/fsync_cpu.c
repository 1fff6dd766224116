/* The CPU an fdatasync costs the syncing thread: N times a 4 KiB pwrite + fdatasync of a
 * preallocated file, wall and CPU (getrusage) per sync (docs/benchmarks.md section 8).
 * cc -O2 bench/fsync_cpu.c -o /tmp/fsync_cpu && /tmp/fsync_cpu DATA_DIR/probe.dat 2000 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: fsync_cpu FILE N\n");
        return 2;
    }
    int n = atoi(argv[2]);
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    static char buf[4096];
    memset(buf, 1, sizeof buf);
    for (int i = 0; i < 1024; i++)
        pwrite(fd, buf, 4096, (off_t)i * 4096);
    fsync(fd);
    struct rusage r0, r1;
    struct timespec t0, t1;
    getrusage(RUSAGE_SELF, &r0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < n; i++) {
        pwrite(fd, buf, 4096, (off_t)(i % 1024) * 4096);
        fdatasync(fd);
    }
    getrusage(RUSAGE_SELF, &r1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double cpu =
        (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1e6 +
        (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec - r0.ru_stime.tv_usec);
    double wall = (t1.tv_sec - t0.tv_sec) * 1e6 + (t1.tv_nsec - t0.tv_nsec) / 1e3;
    printf("%d syncs: wall %.0f us each, CPU (this thread) %.1f us each\n", n, wall / n, cpu / n);
    unlink(argv[1]);
}
