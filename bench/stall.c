/* A stall detector: a thread that sleeps 1 ms in a loop and counts how late it wakes.
 * Run it next to a load (docs/benchmarks.md section 8): cc -O2 bench/stall.c -o /tmp/stall
 * && /tmp/stall SECONDS */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: stall SECONDS\n");
        return 2;
    }
    double secs = atof(argv[1]);
    double t0 = now(), last = t0;
    int hist[6] = {0};
    double worst = 0;
    long n = 0;
    struct timespec req = {0, 1000000};
    while (now() - t0 < secs * 1000) {
        nanosleep(&req, NULL);
        double t = now();
        double over = t - last - 1.0;
        last = t;
        n++;
        if (over > worst)
            worst = over;
        int b = over < 1 ? 0 : over < 2 ? 1 : over < 5 ? 2 : over < 10 ? 3 : over < 50 ? 4 : 5;
        hist[b]++;
    }
    printf("oversleep of a 1 ms sleep, %ld samples: <1ms %d, 1-2 %d, 2-5 %d, 5-10 %d, 10-50 %d, "
           ">50 %d; worst %.1f ms\n",
           n, hist[0], hist[1], hist[2], hist[3], hist[4], hist[5], worst);
}
