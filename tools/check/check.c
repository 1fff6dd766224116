/*
 * `ringpay check --data DIR`: the offline audit of a stopped engine's data (SPEC §1).
 * Exit 0 only when every invariant of DESIGN.md "Ledger" holds and every shard's
 * write-ahead log is whole where it matters (store/check.h, check 6); otherwise one line
 * per violation on stdout and exit 1. The log is read, never written.
 */
#include <errno.h>
#include <stdio.h>

#include "store/check.h"
#include "store/dirlock.h"
#include "tools/cmd.h"
#include "tools/config.h"

static const char check_usage[] =
    "usage: ringpay check --data DIR\n\n"
    "Audits a stopped engine's data directory: the sum of all balances is zero, pending\n"
    "equals the open authorizations, available equals captured minus refunded, every\n"
    "payment's ledger entries match its state, the outbox is gapless; and each shard's\n"
    "write-ahead log (read only): its segment files, that its records start exactly at\n"
    "LMDB's last checkpoint, and that no valid record lies after a damaged one. Prints\n"
    "what the next start would replay from each log. Exit 0 only when all hold; exit 2\n"
    "when the directory is in use by a running engine.";

int cmd_check(int argc, char **argv)
{
    struct opt o[] = {
        {.name = "data",
         .type = OPT_STRING,
         .def = "./data",
         .help = "data directory of a stopped engine"},
    };
    int rc = config_parse(o, 1, argc, argv, check_usage);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    /* The audit reads LMDB environments that a running engine may be writing: refuse
     * instead of reporting a half-written state. */
    struct dirlock lock;
    char why[512];
    if (dirlock_acquire(&lock, o[0].str, false, why, sizeof(why)) != 0) {
        fprintf(stderr, "ringpay: %s\n", why);
        return 2;
    }
    rc = store_check(o[0].str, stdout) == 0 ? 0 : 1;
    dirlock_release(&lock);
    return rc;
}
