/*
 * The data directory's manifest: DIR/MANIFEST records the on-disk format version and
 * the number of shards, and each shard keeps its LMDB environment in DIR/shard-NNN/.
 *
 * The manifest is written once, at the first start, atomically (temporary file,
 * fsync, rename, fsync of the directory), so a crash leaves either no manifest or a
 * whole one. Its content is two text lines:
 *
 *     ringpay-data 1
 *     shards 4
 *
 * Invariant: a data directory is only ever opened with the shard count it was created
 * with (shard = hash(merchant) mod N, so another N would route merchants to shards
 * that do not hold their data). Resharding does not exist yet.
 */
#ifndef RINGPAY_STORE_MANIFEST_H
#define RINGPAY_STORE_MANIFEST_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of the layout of the data directory and of every LMDB record in it. */
#define STORE_FORMAT_VERSION 1

/* Longest path of a shard directory we build (DIR/shard-NNN). */
#define STORE_PATH_MAX 4096

/*
 * Opens the data directory DIR for nshards shards (1..CORES_MAX): creates DIR and the
 * manifest on the first start; afterwards checks that the manifest names the same
 * format version and shard count. Shard directories are not touched (shard_store_open
 * creates its own). Returns 0, or -errno with one clear line (no newline) in err:
 * -EINVAL when the directory holds another shard count or an unreadable manifest,
 * other -errno values for file-system failures.
 */
int store_manifest_open(const char *dir, unsigned nshards, char *err, size_t err_size);

/*
 * Reads the manifest of an existing data directory without creating anything (for
 * `ringpay check`). Returns 0 and the shard count, -ENOENT when there is no manifest,
 * -EINVAL when it is malformed, with one line in err.
 */
int store_manifest_read(const char *dir, unsigned *nshards, char *err, size_t err_size);

/* fsyncs the directory dir, so that a name created, renamed or removed in it is
 * durable (the manifest's rename, a shard directory, LMDB's files). 0 or -errno. */
int store_manifest_sync_dir(const char *dir);

/* Writes "DIR/shard-NNN" into buf. Returns 0, or -ENAMETOOLONG. */
int store_manifest_shard_path(const char *dir, unsigned shard, char *buf, size_t buf_size);

#ifdef __cplusplus
}
#endif

#endif
