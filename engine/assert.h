/*
 * Always-on assertions for programmer errors (STYLE.md rule 3).
 *
 * A broken invariant in a ledger must stop the process rather than let it run on
 * corrupt state, so ASSERT is never compiled out: it prints file, line and the
 * expression to stderr and aborts. Operating errors (bad input, full disk, a peer
 * gone) are not asserted; they are returned as 0 / -errno and handled.
 */
#ifndef RINGPAY_ENGINE_ASSERT_H
#define RINGPAY_ENGINE_ASSERT_H

#include <stdio.h>
#include <stdlib.h>

#define ASSERT(expr)                                                                               \
    do {                                                                                           \
        if (__builtin_expect(!(expr), 0)) {                                                        \
            fprintf(stderr, "ringpay: assertion failed at %s:%d: %s\n", __FILE__, __LINE__,        \
                    #expr);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define UNREACHABLE() ASSERT(!"unreachable")

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
