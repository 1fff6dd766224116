/*
 * MEASUREMENT ONLY — never near data you keep. An LD_PRELOAD shim that turns fsync and
 * fdatasync into no-ops, to measure what the engine would do if a sync cost nothing
 * (docs/benchmarks.md section 8, "Where the CPU goes": the ceiling the fsync leaves).
 * With it, nothing the engine answers is durable.
 *
 *   cc -O2 -shared -fPIC bench/nosync.c -o /tmp/nosync.so
 *   LD_PRELOAD=/tmp/nosync.so ringpay serve --data /tmp/throwaway ...
 */
int fsync(int fd)
{
    (void)fd;
    return 0;
}

int fdatasync(int fd)
{
    (void)fd;
    return 0;
}
