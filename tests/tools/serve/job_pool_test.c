/*
 * Tests of tools/serve/job_pool.c: the class a size takes, exhaustion of one class
 * without borrowing from the other, LIFO reuse, the data area of each class being
 * writable to its full size (ASan sees an overrun), and the in-use counter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "engine/limits.h"
#include "tools/serve/job_pool.h"

static struct shard_job *small_jobs[JOB_SMALL_PER_CORE];
static struct shard_job *large_jobs[JOB_LARGE_PER_CORE];

static void test_classes_and_exhaustion(void **state)
{
    (void)state;
    struct job_pool p;
    assert_int_equal(job_pool_init(&p, JOB_SMALL_PER_CORE), 0);
    for (unsigned i = 0; i < JOB_SMALL_PER_CORE; i++) {
        small_jobs[i] = job_pool_get(&p, i % 2 ? JOB_SMALL_DATA_BYTES : 1);
        assert_non_null(small_jobs[i]);
        memset(job_pool_data(small_jobs[i]), 0xa5, JOB_SMALL_DATA_BYTES);
    }
    assert_int_equal(p.in_use, JOB_SMALL_PER_CORE);
    /* The small class is empty; a small request does not take a large job. */
    assert_null(job_pool_get(&p, 100));
    assert_int_equal(p.empty, 1);
    for (unsigned i = 0; i < JOB_LARGE_PER_CORE; i++) {
        large_jobs[i] = job_pool_get(&p, JOB_SMALL_DATA_BYTES + 1 + i);
        assert_non_null(large_jobs[i]);
        memset(job_pool_data(large_jobs[i]), 0x5a, JOB_LARGE_DATA_BYTES);
    }
    assert_null(job_pool_get(&p, JOB_LARGE_DATA_BYTES));
    assert_int_equal(p.empty, 2);
    assert_int_equal(p.in_use, JOB_SMALL_PER_CORE + JOB_LARGE_PER_CORE);
    /* All distinct. */
    for (unsigned i = 1; i < JOB_SMALL_PER_CORE; i++)
        assert_ptr_not_equal(small_jobs[i], small_jobs[i - 1]);
    /* LIFO: the job put back last is the next one out. */
    job_pool_put(&p, small_jobs[17]);
    assert_ptr_equal(job_pool_get(&p, 10), small_jobs[17]);
    job_pool_put(&p, large_jobs[3]);
    assert_null(job_pool_get(&p, 10)); /* still no small one */
    assert_ptr_equal(job_pool_get(&p, JOB_LARGE_DATA_BYTES), large_jobs[3]);
    for (unsigned i = 0; i < JOB_SMALL_PER_CORE; i++)
        job_pool_put(&p, small_jobs[i]);
    for (unsigned i = 0; i < JOB_LARGE_PER_CORE; i++)
        job_pool_put(&p, large_jobs[i]);
    assert_int_equal(p.in_use, 0);
    job_pool_destroy(&p);
    /* A smaller pool (--jobs-per-core) runs empty at its own count. */
    assert_int_equal(job_pool_init(&p, 3), 0);
    struct shard_job *a = job_pool_get(&p, 1), *b = job_pool_get(&p, 1), *c = job_pool_get(&p, 1);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_null(job_pool_get(&p, 1));
    job_pool_put(&p, b);
    assert_ptr_equal(job_pool_get(&p, 1), b);
    job_pool_put(&p, a);
    job_pool_put(&p, b);
    job_pool_put(&p, c);
    job_pool_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classes_and_exhaustion),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
