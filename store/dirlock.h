/*
 * The lock of a data directory: one process owns a data directory at a time (SPEC §1),
 * or, by explicit choice, a set of settle members that share it (below).
 *
 * DIR/LOCK is an ordinary file that holds the owner's pid as text (for the refusal
 * message only). Ownership is an exclusive flock(2) on it, taken without waiting: the
 * kernel releases it when the owner exits, however it exits (kill -9 included), so a
 * stale LOCK file never blocks a restart and nothing needs cleaning up. The file is
 * opened O_CLOEXEC, so programs the owner might exec never inherit the lock.
 *
 * `serve` (and later `settle`) take it before they open anything else in the
 * directory and hold it until they exit; `check` takes it for the time of the audit,
 * so it refuses to audit the data of a running engine, and an engine refuses to start
 * while an audit runs. The file is not durable state and is never fsynced.
 */
#ifndef RINGPAY_STORE_DIRLOCK_H
#define RINGPAY_STORE_DIRLOCK_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DIRLOCK_FILE "LOCK"

struct dirlock {
    int fd; /* -1: not held */
};

/*
 * Takes the lock of data directory `dir`. create: make DIR/LOCK when it does not exist
 * (an owner that writes the directory); otherwise a missing LOCK file means no process
 * of this version ever owned the directory, and the call succeeds holding nothing.
 * Returns 0, -EBUSY when another process holds the lock (why: "... is in use by
 * another process (pid N)"), or another -errno with one line in why (no newline).
 */
int dirlock_acquire(struct dirlock *l, const char *dir, bool create, char *why, size_t why_bytes);

/*
 * The shared form, for processes that coordinate their writes to the directory among
 * themselves (settle's members of one consumer group on one LMDB store, `settle
 * --shared`): any number of them hold the lock together, while an exclusive holder
 * (dirlock_acquire: a settle without --shared, the dlq commands) and they exclude each
 * other. *alone says whether the caller was the only holder when it arrived: it first
 * takes the lock exclusively (then holds it a moment, so that work that must run with
 * no other member alive, such as failing the uploads a dead process left, can), and
 * returns to shared with dirlock_share. A shared lock held by other members is waited
 * for up to DIRLOCK_SHARE_WAIT_MS (a member starting next to us holds it exclusively
 * for a moment). Returns as dirlock_acquire.
 */
#define DIRLOCK_SHARE_WAIT_MS 2000
int dirlock_acquire_shared(struct dirlock *l, const char *dir, bool *alone, char *why,
                           size_t why_bytes);

/* After dirlock_acquire_shared found the caller alone: the lock becomes shared. flock(2)
 * converts by releasing first, so another process may slip in between: waited for as
 * above. 0 or -EBUSY / -errno with one line in why (the lock is then not held). */
int dirlock_share(struct dirlock *l, const char *dir, char *why, size_t why_bytes);

/* Releases the lock (closing the file); a lock not held is a no-op. */
void dirlock_release(struct dirlock *l);

#ifdef __cplusplus
}
#endif

#endif
