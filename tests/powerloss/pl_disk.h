/*
 * The shadow "disk" of the power-loss tests: its layout (written by the LD_PRELOAD
 * shim, pl_shim.c, inside the engine) and the test side that turns it back into a
 * data directory after a simulated power cut (pl_disk.c, linked into the test only,
 * never into the shim: the test's own writes must not be modelled).
 *
 * Layout of SHADOW/:
 *   root          the key of the root directory, one line
 *   files/KEY     the durable content and size of the regular file KEY
 *   dirs/KEY      the durable listing of the directory KEY: lines "f KEY NAME" or
 *                 "d KEY NAME"
 *   fail          present: the next fsync of a file fails (see pl_shim.c)
 * KEY names an inode: its number and birth time in hex ("ino-sec.nsec"), so a reused
 * inode number never inherits another file's durable content.
 *
 * A name is on the disk when it is in the durable listing of its directory, and that
 * directory is itself reachable from the root through durable listings. A file whose
 * name is durable but whose content never was is empty; a directory whose listing was
 * never synced is empty.
 */
#ifndef RINGPAY_TESTS_POWERLOSS_PL_DISK_H
#define RINGPAY_TESTS_POWERLOSS_PL_DISK_H

#define PL_KEY_MAX   64
#define PL_LINE_MAX  (PL_KEY_MAX + 512)
#define PL_ROOT_FILE "root"
#define PL_FILES_DIR "files"
#define PL_DIRS_DIR  "dirs"
#define PL_FAIL_FILE "fail"
#define PL_SLOW_FILE "slow"

/*
 * After the engine was killed: replaces the directory root with what the shadow says
 * is on the disk, then empties the shadow, so that the next engine start (with the
 * shim) takes the rebuilt root as its durable starting point. Returns 0 or -errno.
 */
int pl_disk_rebuild(const char *shadow, const char *root);

/* Empties the shadow directory (it stays). 0 or -errno. */
int pl_disk_reset(const char *shadow);

/* Makes the next fsync of a file under the root fail with err_name ("EIO", "ENOSPC"),
 * once, or every time when always. 0 or -errno. */
int pl_disk_fail_next(const char *shadow, const char *err_name, int always);

/* Number of names (files and directories) the last rebuild restored. */
int pl_disk_rebuilt_names(void);

/*
 * Where a cut would land (the tests aim cuts at checkpoints and report where they fell);
 * path and dir lie under the shim's root. Each returns 1, 0, or -errno.
 *
 * pl_disk_dirty_hint: the file was written after its last fsync landed, as far as the
 * modification times tell (cheap enough to ask in a loop while the engine runs; a write
 * in the same clock tick as the landing goes unnoticed).
 * pl_disk_file_differs: the file's content or size is not its durable content (a cut now
 * loses writes); exact once the engine is dead.
 * pl_disk_names_differ: the names in directory dir are not its durable listing (a
 * create, rename or unlink whose directory fsync has not come yet).
 */
int pl_disk_dirty_hint(const char *shadow, const char *path);
int pl_disk_file_differs(const char *shadow, const char *path);
int pl_disk_names_differ(const char *shadow, const char *dir);

#endif
