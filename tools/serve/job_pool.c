/*
 * Fixed job pools (see job_pool.h).
 *
 * Layout: small_count small jobs, then JOB_LARGE_PER_CORE large ones, each a
 * struct shard_job and its data area, strides rounded to a cache line. Which class a
 * job belongs to follows from its address, so putting one back needs no tag.
 */
#include "tools/serve/job_pool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/assert.h"
#include "engine/limits.h"

#define JOB_ALIGN 64

static size_t stride_of(size_t data_bytes)
{
    size_t n = sizeof(struct shard_job) + data_bytes;
    return (n + JOB_ALIGN - 1) / JOB_ALIGN * JOB_ALIGN;
}

int job_pool_init(struct job_pool *p, unsigned small_count)
{
    ASSERT(small_count >= 1 && small_count <= JOB_SMALL_PER_CORE);
    memset(p, 0, sizeof(*p));
    p->small_count = small_count;
    p->small_stride = stride_of(JOB_SMALL_DATA_BYTES);
    p->large_stride = stride_of(JOB_LARGE_DATA_BYTES);
    size_t bytes = p->small_stride * p->small_count + p->large_stride * JOB_LARGE_PER_CORE;
    /* Untouched pages cost address space only: a core that never has more than a few
     * jobs in flight keeps a few pages of this resident. */
    p->mem = aligned_alloc(JOB_ALIGN, bytes);
    p->free_small = calloc(p->small_count, sizeof(*p->free_small));
    p->free_large = calloc(JOB_LARGE_PER_CORE, sizeof(*p->free_large));
    if (p->mem == NULL || p->free_small == NULL || p->free_large == NULL) {
        job_pool_destroy(p);
        return -ENOMEM;
    }
    /* Pushed in reverse, so the first gets hand out the lowest addresses. */
    for (unsigned i = p->small_count; i-- > 0;)
        p->free_small[p->free_small_n++] = (struct shard_job *)(p->mem + i * p->small_stride);
    char *large = p->mem + p->small_stride * p->small_count;
    for (unsigned i = JOB_LARGE_PER_CORE; i-- > 0;)
        p->free_large[p->free_large_n++] = (struct shard_job *)(large + i * p->large_stride);
    return 0;
}

void job_pool_destroy(struct job_pool *p)
{
    free(p->mem);
    free(p->free_small);
    free(p->free_large);
    memset(p, 0, sizeof(*p));
}

static void count(uint64_t *field, int delta)
{
    __atomic_store_n(field, __atomic_load_n(field, __ATOMIC_RELAXED) + (uint64_t)(int64_t)delta,
                     __ATOMIC_RELAXED);
}

struct shard_job *job_pool_get(struct job_pool *p, size_t data_bytes)
{
    ASSERT(data_bytes <= JOB_LARGE_DATA_BYTES);
    struct shard_job *job = NULL;
    if (data_bytes <= JOB_SMALL_DATA_BYTES) {
        if (p->free_small_n > 0)
            job = p->free_small[--p->free_small_n];
    } else if (p->free_large_n > 0) {
        job = p->free_large[--p->free_large_n];
    }
    count(job ? &p->in_use : &p->empty, 1);
    return job;
}

char *job_pool_data(struct shard_job *job)
{
    return (char *)(job + 1);
}

void job_pool_put(struct job_pool *p, struct shard_job *job)
{
    char *a = (char *)job;
    char *large = p->mem + p->small_stride * p->small_count;
    if (a < large) {
        ASSERT(a >= p->mem && (size_t)(a - p->mem) % p->small_stride == 0);
        ASSERT(p->free_small_n < p->small_count);
        p->free_small[p->free_small_n++] = job;
    } else {
        ASSERT(a < large + p->large_stride * JOB_LARGE_PER_CORE);
        ASSERT((size_t)(a - large) % p->large_stride == 0);
        ASSERT(p->free_large_n < JOB_LARGE_PER_CORE);
        p->free_large[p->free_large_n++] = job;
    }
    count(&p->in_use, -1);
}
