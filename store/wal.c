/*
 * The write-ahead log of one shard (see wal.h).
 *
 * Invariants:
 *   - Staged bytes are pieces (position, length) in one buffer; positions only grow.
 *     The buffer being filled is never the one in flight; a write takes the whole
 *     filled buffer (swapped), so the syncer reads bytes no other thread writes.
 *   - durable <= written, and durable only moves to the end of a write whose pwrites and
 *     fdatasyncs all completed; it is published with a release store after them.
 *   - Segments [w->cur_seg, prepared) exist durably at full size. The writer enters a
 *     segment only below `prepared`; wal_prepare (another thread) raises `prepared`
 *     after the files and their directory are synced.
 *   - A failure (err != 0) is sticky: no write starts after it.
 */
#define _GNU_SOURCE
#include "store/wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/assert.h"
#include "engine/clock.h"
#include "engine/limits.h"
#include "store/manifest.h"

#define PIECES_MAX 8 /* a stage crosses at most a few segment starts */

struct piece {
    uint64_t pos;
    size_t off, len; /* bytes buf[off, off+len) go to positions [pos, pos+len) */
};

struct stage {
    uint8_t *buf;
    size_t len; /* bytes used */
    struct piece pieces[PIECES_MAX];
    unsigned npieces;
    uint64_t end; /* position after the last piece */
};

struct wal {
    char dir[STORE_PATH_MAX];
    size_t seg_bytes;
    unsigned spares;
    uint32_t epoch;
    unsigned fault_after_syncs;
    int fault_errno;
    void (*recycle_hook)(void *arg);
    void *recycle_hook_arg;

    /* shard thread */
    uint64_t written; /* end of the staged bytes: the next record's position */
    struct stage stages[2];
    unsigned fill; /* index of the stage being filled */
    bool recording;
    uint64_t rec_pos;
    struct walrec_writer wr;
    bool busy; /* a write is in flight (the shard thread's view) */

    /* shared */
    uint64_t durable;  /* atomic */
    uint64_t prepared; /* atomic: segments below this index are ready */
    uint64_t cur_seg;  /* atomic: the segment the writer is in */
    int err;           /* atomic: sticky failure */
    int efd;
    struct wal_stats stats; /* relaxed atomics */

    /* syncer thread */
    pthread_t tid;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct stage *todo; /* handed over by wal_kick, under mu */
    bool stop;
    int seg_fd;        /* the segment file the syncer has open */
    uint64_t seg_open; /* its index; UINT64_MAX: none */
};

static void stat_add(uint64_t *f, uint64_t d)
{
    __atomic_store_n(f, __atomic_load_n(f, __ATOMIC_RELAXED) + d, __ATOMIC_RELAXED);
}

static void seg_path(const struct wal *w, uint64_t seg, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%016" PRIx64 ".log", w->dir, seg);
}

/* ---- segment files ------------------------------------------------------------------ */

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/* Writes a new segment file of seg_bytes zeros, fsyncs it. The name is durable only
 * after the caller fsyncs the directory.
 *
 * In 4 KiB writes, on purpose: the page cache keeps the folios a write allocates, and
 * their size follows the write's (ext4 and XFS on Linux 6.x use large folios). Zeroed
 * in 1 MiB writes, every later log write of a few KiB dirtied a whole 1 MiB folio and its
 * fdatasync wrote 1 MiB: measured here, 1,024 KiB written per sync instead of 6, ~6 GB
 * per shard in 8 s of load, which the checkpoints' LMDB writes then queued behind. */
static int make_segment(struct wal *w, uint64_t seg)
{
    char path[STORE_PATH_MAX + 32], tmp[STORE_PATH_MAX + 40];
    seg_path(w, seg, path, sizeof(path));
    struct stat st;
    if (stat(path, &st) == 0)
        return -EEXIST; /* a file of another size: never overwrite what may be the log */
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    static const uint8_t zeros[4096];
    int rc = 0;
    for (size_t off = 0; rc == 0 && off < w->seg_bytes;) {
        size_t n = w->seg_bytes - off < sizeof(zeros) ? w->seg_bytes - off : sizeof(zeros);
        ssize_t k = pwrite(fd, zeros, n, (off_t)off);
        if (k <= 0)
            rc = k < 0 ? -errno : -EIO;
        else
            off += (size_t)k;
    }
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc)
        unlink(tmp);
    else
        stat_add(&w->stats.segments_made, 1);
    return rc;
}

static bool segment_exists(const struct wal *w, uint64_t seg)
{
    char path[STORE_PATH_MAX + 32];
    seg_path(w, seg, path, sizeof(path));
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && (size_t)st.st_size == w->seg_bytes;
}

/* The lowest segment index in the directory below `below`, or UINT64_MAX. */
static uint64_t oldest_below(const struct wal *w, uint64_t below)
{
    DIR *d = opendir(w->dir);
    if (d == NULL)
        return UINT64_MAX;
    uint64_t best = UINT64_MAX;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        char *end;
        if (strlen(e->d_name) != 20 || strcmp(e->d_name + 16, ".log") != 0)
            continue;
        uint64_t seg = strtoull(e->d_name, &end, 16);
        if (end == e->d_name + 16 && seg < below && seg < best)
            best = seg;
    }
    closedir(d);
    return best;
}

int wal_prepare(struct wal *w, uint64_t below)
{
    uint64_t below_seg = below / w->seg_bytes;
    uint64_t want = __atomic_load_n(&w->cur_seg, __ATOMIC_ACQUIRE) + 1 + w->spares;
    uint64_t next = __atomic_load_n(&w->prepared, __ATOMIC_ACQUIRE);
    bool changed = false;
    int rc = 0;
    for (; rc == 0 && next < want; next++) {
        if (segment_exists(w, next))
            continue;
        uint64_t old = oldest_below(w, below_seg);
        char from[STORE_PATH_MAX + 32], to[STORE_PATH_MAX + 32];
        seg_path(w, next, to, sizeof(to));
        if (old != UINT64_MAX) { /* recycle: its records are in the checkpoint */
            seg_path(w, old, from, sizeof(from));
            rc = rename(from, to) == 0 ? 0 : -errno;
            if (rc == 0)
                stat_add(&w->stats.segments_recycled, 1);
            if (rc == 0 && w->recycle_hook)
                w->recycle_hook(w->recycle_hook_arg);
        } else {
            rc = make_segment(w, next);
        }
        changed = true;
    }
    if (changed && rc == 0)
        rc = fsync_dir(w->dir);
    if (rc == 0)
        __atomic_store_n(&w->prepared, next, __ATOMIC_RELEASE);
    return rc;
}

/* ---- the syncer thread ----------------------------------------------------------------- */

static int fault(struct wal *w)
{
    if (w->fault_errno == 0)
        return 0;
    if (w->fault_after_syncs > 0) {
        w->fault_after_syncs--;
        return 0;
    }
    return -w->fault_errno;
}

static int seg_fd(struct wal *w, uint64_t seg)
{
    if (w->seg_open == seg)
        return w->seg_fd;
    if (w->seg_fd >= 0)
        close(w->seg_fd);
    char path[STORE_PATH_MAX + 32];
    seg_path(w, seg, path, sizeof(path));
    w->seg_fd = open(path, O_WRONLY | O_CLOEXEC);
    w->seg_open = w->seg_fd >= 0 ? seg : UINT64_MAX;
    return w->seg_fd >= 0 ? w->seg_fd : -errno;
}

/* Writes one piece into its segment (it lies in one segment); 0 or -errno. */
static int write_piece(struct wal *w, const struct stage *s, const struct piece *p)
{
    uint64_t seg = p->pos / w->seg_bytes;
    ASSERT((p->pos + p->len - 1) / w->seg_bytes == seg);
    int fd = seg_fd(w, seg);
    if (fd < 0)
        return fd;
    size_t done = 0;
    while (done < p->len) {
        ssize_t k = pwrite(fd, s->buf + p->off + done, p->len - done,
                           (off_t)(p->pos % w->seg_bytes + done));
        if (k <= 0)
            return k < 0 ? -errno : -EIO;
        done += (size_t)k;
    }
    return 0;
}

/* One write: every piece, then an fdatasync of every segment file it touched (a sync
 * covers only what was written before it started: the writes come first). */
static int do_write(struct wal *w, const struct stage *s)
{
    uint64_t t0 = clock_mono_ns();
    int rc = 0;
    uint64_t synced = UINT64_MAX;
    for (unsigned i = 0; rc == 0 && i < s->npieces; i++)
        rc = write_piece(w, s, &s->pieces[i]);
    for (unsigned i = 0; rc == 0 && i < s->npieces; i++) {
        uint64_t seg = s->pieces[i].pos / w->seg_bytes;
        if (seg == synced)
            continue;
        int fd = seg_fd(w, seg);
        rc = fd < 0 ? fd : fault(w);
        if (rc == 0 && fdatasync(fd) != 0)
            rc = -errno;
        synced = seg;
        stat_add(&w->stats.syncs, 1);
    }
    stat_add(&w->stats.writes, 1);
    stat_add(&w->stats.bytes, s->len);
    stat_add(&w->stats.sync_ns, clock_mono_ns() - t0);
    return rc;
}

static void *syncer_main(void *arg)
{
    struct wal *w = arg;
    pthread_setname_np(pthread_self(), "rp-wal"); /* in per-thread CPU profiles */
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->todo == NULL && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->todo == NULL)
            break;
        struct stage *s = w->todo;
        pthread_mutex_unlock(&w->mu);
        int rc = __atomic_load_n(&w->err, __ATOMIC_ACQUIRE) ? -EIO : do_write(w, s);
        if (rc)
            __atomic_store_n(&w->err, rc, __ATOMIC_RELEASE);
        else
            __atomic_store_n(&w->durable, s->end, __ATOMIC_RELEASE);
        pthread_mutex_lock(&w->mu);
        w->todo = NULL;
        uint64_t one = 1;
        ssize_t k = write(w->efd, &one, sizeof(one));
        (void)k; /* an eventfd add of 1 cannot fail short of overflow */
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---- open, replay, close -------------------------------------------------------------- */

/* Reads the number in file `name` of the log directory: 0 and *v, 0 and *v untouched
 * when the file does not exist, or -errno. */
static int read_number(const struct wal *w, const char *name, uint64_t *v)
{
    char path[STORE_PATH_MAX + 32], text[32] = "";
    snprintf(path, sizeof(path), "%s/%s", w->dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    ssize_t n = read(fd, text, sizeof(text) - 1);
    close(fd);
    text[n > 0 ? n : 0] = '\0';
    /* Strict: digits and a newline. Anything else is damage, never a default (a
     * segment size read as 0 would be replaced and remap every position). */
    char *end;
    errno = 0;
    unsigned long long x = strtoull(text, &end, 10);
    if (end == text || errno || (*end != '\n' && *end != '\0') || (*end && end[1]))
        return -EBADMSG;
    *v = x;
    return 0;
}

/* Writes a number into file `name` durably (temporary file, fsync, rename, directory
 * fsync). */
static int write_number(const struct wal *w, const char *name, uint64_t v)
{
    char path[STORE_PATH_MAX + 32], tmp[STORE_PATH_MAX + 40], text[32];
    snprintf(path, sizeof(path), "%s/%s", w->dir, name);
    snprintf(tmp, sizeof(tmp), "%s/%s.tmp", w->dir, name);
    int n = snprintf(text, sizeof(text), "%" PRIu64 "\n", v);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    int rc = write(fd, text, (size_t)n) == n && fsync(fd) == 0 ? 0 : -EIO;
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    return rc ? rc : fsync_dir(w->dir);
}

static int read_epoch(const struct wal *w, uint32_t *epoch)
{
    uint64_t v = *epoch;
    int rc = read_number(w, "epoch", &v);
    *epoch = (uint32_t)v;
    return rc;
}

static int write_epoch(const struct wal *w, uint32_t epoch)
{
    return write_number(w, "epoch", epoch);
}

/*
 * The segment size is the log's, fixed when it was created (positions map to files by
 * it): an existing log keeps its own whatever the options say, a new one records the
 * options' durably before any segment exists.
 */
static bool segment_bytes_valid(uint64_t v)
{
    return v >= 2 * (WALREC_HEADER_BYTES + WALREC_OP_MAX_BYTES) && v <= ((uint64_t)1 << 40);
}

static int segment_size_settle(struct wal *w)
{
    uint64_t v = 0;
    int rc = read_number(w, "segment-bytes", &v);
    if (rc)
        return rc;
    if (v == 0)
        return write_number(w, "segment-bytes", w->seg_bytes);
    if (!segment_bytes_valid(v))
        return -EBADMSG;
    w->seg_bytes = (size_t)v;
    return 0;
}

int wal_open(struct wal **out, const char *shard_dir, uint64_t from, const struct wal_options *opt,
             char *why, size_t why_bytes)
{
    struct wal *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    w->seg_bytes = opt && opt->segment_bytes ? opt->segment_bytes : WAL_SEGMENT_BYTES;
    w->spares = opt && opt->spares ? opt->spares : WAL_SPARE_SEGMENTS;
    w->fault_after_syncs = opt ? opt->fault_after_syncs : 0;
    w->fault_errno = opt ? opt->fault_errno : 0;
    w->recycle_hook = opt ? opt->recycle_hook : NULL;
    w->recycle_hook_arg = opt ? opt->recycle_hook_arg : NULL;
    ASSERT(w->seg_bytes >= 2 * (WALREC_HEADER_BYTES + WALREC_OP_MAX_BYTES));
    w->written = from;
    w->durable = from;
    w->cur_seg = from / w->seg_bytes;
    w->prepared = w->cur_seg;
    w->seg_fd = -1;
    w->seg_open = UINT64_MAX;
    w->efd = -1;
    int rc = -ENOMEM;
    snprintf(w->dir, sizeof(w->dir), "%s/wal", shard_dir);
    for (int i = 0; i < 2; i++) {
        w->stages[i].buf = malloc(WAL_STAGE_BYTES);
        if (w->stages[i].buf == NULL)
            goto out_free;
    }
    if (mkdir(w->dir, 0700) != 0 && errno != EEXIST) {
        rc = -errno;
        snprintf(why, why_bytes, "cannot create %s: %s", w->dir, strerror(errno));
        goto out_free;
    }
    rc = fsync_dir(shard_dir); /* the wal directory's name */
    if (rc == 0)
        rc = segment_size_settle(w);
    if (rc == 0) {
        w->cur_seg = from / w->seg_bytes;
        w->prepared = w->cur_seg;
        rc = read_epoch(w, &w->epoch);
    }
    if (rc == 0)
        rc = wal_prepare(w, from); /* the current segment and the spares */
    if (rc) {
        snprintf(why, why_bytes, "cannot prepare the log in %s: %s", w->dir, strerror(-rc));
        goto out_free;
    }
    w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->efd < 0) {
        rc = -errno;
        snprintf(why, why_bytes, "eventfd: %s", strerror(errno));
        goto out_free;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    *out = w;
    return 0;

out_free:
    for (int i = 0; i < 2; i++)
        free(w->stages[i].buf);
    free(w);
    return rc;
}

/* Reads segment seg's bytes [off, off+len) into buf; the count read, or -errno. */
static ssize_t read_at(const struct wal *w, uint64_t seg, size_t off, uint8_t *buf, size_t len)
{
    char path[STORE_PATH_MAX + 32];
    seg_path(w, seg, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, buf + done, len - done, (off_t)(off + done));
        if (n < 0) {
            int err = -errno;
            close(fd);
            return err;
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    /* The pages read are clean; dropped, so that the log's next writes into this range
     * (the tail after a recovery) allocate small folios rather than reuse readahead's,
     * which may be large (see make_segment). A precaution: the test could not show
     * readahead's folios here, since the pages were still cached from the writes. */
    (void)posix_fadvise(fd, (off_t)off, (off_t)len, POSIX_FADV_DONTNEED);
    close(fd);
    return (ssize_t)done;
}

/* A window over the log for replay: bytes of one segment [pos, pos + len) in buf. */
struct window {
    uint8_t *buf;
    size_t cap;
    uint64_t pos;
    size_t len;
};

/* Makes the window hold at least `need` bytes from pos (as many as the segment has),
 * reading ahead a whole window. Returns the bytes available from pos, or -errno. */
static ssize_t window_at(const struct wal *w, struct window *win, uint64_t pos, size_t need)
{
    size_t left = w->seg_bytes - pos % w->seg_bytes;
    if (need > left)
        need = left;
    if (pos >= win->pos && pos + need <= win->pos + win->len &&
        pos / w->seg_bytes == win->pos / w->seg_bytes)
        return (ssize_t)(win->pos + win->len - pos);
    size_t want = left < win->cap ? left : win->cap;
    ssize_t n = read_at(w, pos / w->seg_bytes, pos % w->seg_bytes, win->buf, want);
    if (n < 0)
        return n;
    win->pos = pos;
    win->len = (size_t)n;
    return n;
}

/*
 * Reads the record that should start at pos (at least WALREC_HEADER_BYTES before the
 * segment's end): 0 with *h and *rec (in the window) when it is whole and right and fits
 * its segment, 1 when it is not a record (the log ends there), or -errno of a read.
 */
static int read_record(const struct wal *w, struct window *win, uint64_t pos,
                       struct walrec_header *h, const uint8_t **rec)
{
    size_t left = w->seg_bytes - pos % w->seg_bytes;
    ASSERT(left >= WALREC_HEADER_BYTES);
    ssize_t n = window_at(w, win, pos, WALREC_HEADER_BYTES);
    if (n < 0)
        return (int)n;
    const uint8_t *at = win->buf + (pos - win->pos);
    int ck = walrec_check(at, (size_t)n, pos, h);
    if (ck == -EAGAIN) { /* the record reaches past the window: read it whole */
        n = window_at(w, win, pos, WALREC_MAX_BYTES);
        if (n < 0)
            return (int)n;
        at = win->buf + (pos - win->pos);
        ck = walrec_check(at, (size_t)n, pos, h);
    }
    if (ck != 0 || h->length > left)
        return 1;
    *rec = at;
    return 0;
}

/* A walk along the chain of records (wal_replay, wal_scan). */
struct walk {
    uint64_t pos;          /* in: where to start; out: where the walk stopped */
    uint64_t until;        /* stop before a record at this position or later */
    uint64_t last;         /* the start of the last record read */
    uint64_t last_end;     /* its end */
    uint32_t epoch;        /* the epoch of the last record read; 0: none yet */
    uint64_t records, ops; /* WALREC_OPS records read, and their operations */
};

/*
 * Reads the chain of records from k->pos, handing every WALREC_OPS record to fn (when
 * not NULL) and following skip records, up to the log's end — a torn, corrupt, stale or
 * never-written record (the epochs along the log never go down) — or k->until. Returns
 * 0, fn's nonzero value, or -errno of a read.
 */
static int walk_log(const struct wal *w, struct window *win, struct walk *k,
                    int (*fn)(void *arg, const struct walrec_header *h, const uint8_t *rec),
                    void *arg)
{
    while (k->pos < k->until) {
        size_t left = w->seg_bytes - k->pos % w->seg_bytes;
        if (left < WALREC_HEADER_BYTES) { /* too little for a record: the next segment */
            k->pos += left;
            continue;
        }
        struct walrec_header h;
        const uint8_t *rec;
        int rc = read_record(w, win, k->pos, &h, &rec);
        if (rc < 0)
            return rc;
        if (rc > 0 || h.epoch < k->epoch)
            return 0; /* the log's end */
        k->epoch = h.epoch;
        k->last = k->pos;
        k->last_end = k->pos + h.length;
        if (h.type == WALREC_OPS) {
            k->records++;
            k->ops += h.n;
            if (fn != NULL && (rc = fn(arg, &h, rec)) != 0)
                return rc;
        }
        k->pos += h.length;
    }
    return 0;
}

int wal_replay(struct wal *w,
               int (*fn)(void *arg, const struct walrec_header *h, const uint8_t *rec), void *arg)
{
    struct window win = {.cap = 2 * (size_t)WALREC_MAX_BYTES};
    win.buf = malloc(win.cap);
    if (win.buf == NULL)
        return -ENOMEM;
    struct walk k = {.pos = w->written, .until = UINT64_MAX};
    int rc = walk_log(w, &win, &k, fn, arg);
    free(win.buf);
    if (rc)
        return rc;
    uint64_t pos = k.pos;
    uint32_t epoch = k.epoch;
    /* Writes go on at the end, in a new epoch written before anything else. */
    w->written = pos;
    __atomic_store_n(&w->durable, pos, __ATOMIC_RELEASE);
    __atomic_store_n(&w->cur_seg, pos / w->seg_bytes, __ATOMIC_RELEASE);
    w->epoch = (epoch > w->epoch ? epoch : w->epoch) + 1;
    rc = write_epoch(w, w->epoch);
    if (rc == 0)
        rc = wal_prepare(w, 0);
    if (rc == 0 && pthread_create(&w->tid, NULL, syncer_main, w) != 0)
        rc = -EAGAIN;
    w->started = rc == 0;
    return rc;
}

void wal_close(struct wal *w)
{
    if (w == NULL)
        return;
    if (w->started) {
        pthread_mutex_lock(&w->mu);
        w->stop = true;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->tid, NULL);
    }
    if (w->seg_fd >= 0)
        close(w->seg_fd);
    if (w->efd >= 0)
        close(w->efd);
    for (int i = 0; i < 2; i++)
        free(w->stages[i].buf);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

/* ---- read-only inspection (wal_scan) ------------------------------------------------------ */

/* Reads the number in file `name` of the log directory strictly (decimal digits, an
 * optional newline): 0 and *v, -ENOENT, -EBADMSG, or -errno. Opens it read-only. */
static int scan_number(const struct wal *w, const char *name, uint64_t *v)
{
    char path[STORE_PATH_MAX + 32], text[32];
    snprintf(path, sizeof(path), "%s/%s", w->dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, text, sizeof(text) - 1);
    int err = n < 0 ? -errno : 0;
    close(fd);
    if (err)
        return err;
    size_t len = (size_t)n;
    if (len > 0 && text[len - 1] == '\n')
        len--;
    if (len == 0 || len > 20)
        return -EBADMSG;
    uint64_t x = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9' || x > (UINT64_MAX - 9) / 10)
            return -EBADMSG;
        x = x * 10 + (uint64_t)(text[i] - '0');
    }
    *v = x;
    return 0;
}

static int cmp_segment(const void *a, const void *b)
{
    const struct wal_segment *x = a, *y = b;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Lists the files named like segments, sorted by index. 0 or -errno. */
static int list_segments(const struct wal *w, struct wal_scan_report *r)
{
    DIR *d = opendir(w->dir);
    if (d == NULL)
        return -errno;
    size_t cap = 0;
    int rc = 0;
    for (struct dirent *e; rc == 0 && (e = readdir(d)) != NULL;) {
        const char *name = e->d_name;
        if (strlen(name) != 20 || strcmp(name + 16, ".log") != 0 ||
            strspn(name, "0123456789abcdef") != 16)
            continue;
        struct stat st;
        if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            rc = -errno;
            break;
        }
        if (r->nsegments == cap) {
            size_t next = cap ? 2 * cap : 16;
            struct wal_segment *p = realloc(r->segments, next * sizeof(*p));
            if (p == NULL) {
                rc = -ENOMEM;
                break;
            }
            r->segments = p;
            cap = next;
        }
        r->segments[r->nsegments++] = (struct wal_segment){
            .index = strtoull(name, NULL, 16),
            .size_bytes = (uint64_t)st.st_size,
            .regular = S_ISREG(st.st_mode),
        };
    }
    closedir(d);
    if (rc == 0 && r->nsegments > 1)
        qsort(r->segments, r->nsegments, sizeof(*r->segments), cmp_segment);
    return rc;
}

static bool segment_listed(const struct wal_scan_report *r, uint64_t index)
{
    struct wal_segment key = {.index = index};
    return bsearch(&key, r->segments, r->nsegments, sizeof(key), cmp_segment) != NULL;
}

static uint64_t get_u64le(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Says why the walk along the chain stopped at `end` (epoch: the one in force). */
static int classify_end(const struct wal *w, struct window *win, uint64_t end, uint32_t epoch,
                        struct wal_scan_report *r)
{
    uint64_t seg = end / w->seg_bytes;
    if (!segment_listed(r, seg)) {
        r->why = WAL_END_MISSING;
        return 0;
    }
    ssize_t n = window_at(w, win, end, WALREC_MAX_BYTES);
    if (n < 0)
        return (int)n;
    const uint8_t *at = win->buf + (end - win->pos);
    r->why = WAL_END_TORN;
    if ((size_t)n < WALREC_HEADER_BYTES)
        return 0; /* a short file (its size is reported apart) */
    static const uint8_t zeros[WALREC_HEADER_BYTES];
    if (memcmp(at, zeros, sizeof(zeros)) == 0) {
        r->why = WAL_END_WRITTEN;
        return 0;
    }
    struct walrec_header h;
    if (walrec_check(at, (size_t)n, end, &h) == 0) {
        if (h.epoch < epoch) { /* else its length runs past the segment: torn */
            r->why = WAL_END_STALE;
            r->end_epoch = h.epoch;
        }
        return 0;
    }
    uint64_t claims = get_u64le(at + 16);
    if (claims != end && walrec_check(at, (size_t)n, claims, &h) == 0) {
        bool recycled = claims % w->seg_bytes == end % w->seg_bytes && claims / w->seg_bytes < seg;
        r->why = recycled ? WAL_END_RECYCLED : WAL_END_MISPLACED;
        r->end_claims = claims;
    }
    return 0;
}

/* 1 and *epoch when a whole record of epoch >= min_epoch starts at pos, 0 when not, or
 * -errno. */
static int record_at(const struct wal *w, struct window *win, uint64_t pos, uint32_t min_epoch,
                     uint32_t *epoch)
{
    if (w->seg_bytes - pos % w->seg_bytes < WALREC_HEADER_BYTES)
        return 0;
    struct walrec_header h;
    const uint8_t *rec;
    int rc = read_record(w, win, pos, &h, &rec);
    if (rc != 0)
        return rc < 0 ? rc : 0;
    *epoch = h.epoch;
    return h.epoch >= min_epoch;
}

/*
 * The first whole record after `end` of epoch >= min_epoch: at any byte of the rest of
 * end's segment where the magic is, or at the start of a later segment file (where the
 * writer enters a segment). *at = its position (0 when there is none) and *epoch its
 * epoch. 0 or -errno.
 */
static int find_beyond(const struct wal *w, struct window *win, const struct wal_scan_report *r,
                       uint64_t end, uint32_t min_epoch, uint64_t *at, uint32_t *epoch)
{
    uint8_t magic[4];
    for (int i = 0; i < 4; i++)
        magic[i] = (uint8_t)(WALREC_MAGIC >> (8 * i));
    uint64_t seg = end / w->seg_bytes;
    uint64_t seg_end = (seg + 1) * w->seg_bytes;
    *at = 0;
    uint64_t pos = segment_listed(r, seg) ? end + 1 : seg_end;
    while (pos + WALREC_HEADER_BYTES <= seg_end) {
        ssize_t n = window_at(w, win, pos, WALREC_HEADER_BYTES);
        if (n < 0)
            return (int)n;
        if ((size_t)n < WALREC_HEADER_BYTES)
            break; /* a short file */
        const uint8_t *p = win->buf + (pos - win->pos);
        const uint8_t *hit = memmem(p, (size_t)n, magic, sizeof(magic));
        if (hit == NULL) {
            pos += (uint64_t)n - (sizeof(magic) - 1); /* a magic may straddle windows */
            continue;
        }
        uint64_t cand = pos + (uint64_t)(hit - p);
        int rc = record_at(w, win, cand, min_epoch, epoch);
        if (rc < 0)
            return rc;
        if (rc > 0) {
            *at = cand;
            return 0;
        }
        pos = cand + 1;
    }
    for (size_t i = 0; i < r->nsegments; i++) {
        if (r->segments[i].index <= seg)
            continue;
        uint64_t start = r->segments[i].index * w->seg_bytes;
        int rc = record_at(w, win, start, min_epoch, epoch);
        if (rc < 0)
            return rc;
        if (rc > 0) {
            *at = start;
            return 0;
        }
    }
    return 0;
}

/* The walks of wal_scan: up to `from` in its segment, from `from` to the end, and from
 * the first record beyond the end that a torn tail does not explain. */
static int scan_walks(const struct wal *w, struct window *win, uint64_t from,
                      int (*fn)(void *arg, const struct walrec_header *h, const uint8_t *rec),
                      void *arg, struct wal_scan_report *r)
{
    struct walk b = {.pos = from - from % w->seg_bytes, .until = from};
    int rc = walk_log(w, win, &b, NULL, NULL);
    if (rc)
        return rc;
    r->before_end = b.pos;
    r->before_last = b.last;
    r->before_last_end = b.last_end;
    r->before_epoch = b.epoch;
    struct walk k = {.pos = from, .until = UINT64_MAX};
    if ((rc = walk_log(w, win, &k, fn, arg)) != 0)
        return rc;
    r->walked = true;
    r->end = k.pos;
    r->records = k.records;
    r->ops = k.ops;
    r->epoch_last = k.epoch;
    if ((rc = classify_end(w, win, k.pos, k.epoch, r)) != 0)
        return rc;
    /* The epoch in force at the end: of the last record before it. */
    uint32_t in_force = r->epoch_state == 0 ? r->epoch_file : 0;
    if (k.epoch != 0)
        in_force = k.epoch;
    else if (b.pos == from && b.epoch != 0)
        in_force = b.epoch;
    uint64_t at;
    uint32_t epoch = 0;
    if ((rc = find_beyond(w, win, r, k.pos, in_force, &at, &epoch)) != 0 || at == 0)
        return rc;
    struct walk f = {.pos = at, .until = UINT64_MAX};
    if ((rc = walk_log(w, win, &f, NULL, NULL)) != 0)
        return rc;
    r->beyond_pos = at;
    r->beyond_end = f.pos;
    r->beyond_records = f.records;
    r->beyond_ops = f.ops;
    r->beyond_epoch = epoch;
    return 0;
}

int wal_scan(const char *shard_dir, uint64_t from,
             int (*fn)(void *arg, const struct walrec_header *h, const uint8_t *rec), void *arg,
             struct wal_scan_report *out)
{
    ASSERT(shard_dir != NULL && out != NULL);
    memset(out, 0, sizeof(*out));
    out->from = out->end = from;
    /* Only dir and seg_bytes are used: no file is opened for writing, no thread runs. */
    struct wal *w = calloc(1, sizeof(*w));
    struct window win = {.cap = 2 * (size_t)WALREC_MAX_BYTES};
    if (w == NULL)
        return -ENOMEM;
    snprintf(w->dir, sizeof(w->dir), "%s/wal", shard_dir);
    struct stat st;
    int rc = stat(w->dir, &st) != 0 ? -errno : S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
    if (rc == 0)
        rc = list_segments(w, out);
    if (rc)
        goto out_free;
    uint64_t v = 0;
    out->segment_bytes_state = scan_number(w, "segment-bytes", &v);
    if (out->segment_bytes_state == 0 && !segment_bytes_valid(v))
        out->segment_bytes_state = -EBADMSG;
    out->segment_bytes = out->segment_bytes_state == 0 ? v : 0;
    uint64_t e = 0;
    out->epoch_state = scan_number(w, "epoch", &e);
    if (out->epoch_state == 0 && e > UINT32_MAX)
        out->epoch_state = -EBADMSG;
    out->epoch_file = out->epoch_state == 0 ? (uint32_t)e : 0;
    if (out->segment_bytes_state != 0)
        goto out_free; /* positions cannot be mapped to files: no walk */
    w->seg_bytes = (size_t)out->segment_bytes;
    win.buf = malloc(win.cap);
    rc = win.buf ? scan_walks(w, &win, from, fn, arg, out) : -ENOMEM;
    free(win.buf);
out_free:
    free(w);
    return rc;
}

void wal_scan_free(struct wal_scan_report *r)
{
    free(r->segments);
    r->segments = NULL;
    r->nsegments = 0;
}

/* ---- appending (shard thread) ------------------------------------------------------------ */

/* Adds [pos, pos+len) as a piece of s backed by s->buf + s->len. */
static uint8_t *stage_take(struct stage *s, uint64_t pos, size_t len)
{
    struct piece *last = s->npieces ? &s->pieces[s->npieces - 1] : NULL;
    if (last && last->pos + last->len == pos && last->off + last->len == s->len) {
        last->len += len;
    } else {
        ASSERT(s->npieces < PIECES_MAX);
        s->pieces[s->npieces++] = (struct piece){.pos = pos, .off = s->len, .len = len};
    }
    uint8_t *p = s->buf + s->len;
    s->len += len;
    s->end = pos + len;
    return p;
}

struct walrec_writer *wal_begin(struct wal *w)
{
    ASSERT(w->started && !w->recording);
    if (__atomic_load_n(&w->err, __ATOMIC_ACQUIRE))
        return NULL;
    struct stage *s = &w->stages[w->fill];
    size_t room = WAL_STAGE_BYTES - s->len;
    size_t least = WALREC_HEADER_BYTES + WALREC_OP_MAX_BYTES;
    uint64_t pos = w->written;
    size_t left = w->seg_bytes - pos % w->seg_bytes;
    if (left < least) { /* not enough of this segment for any record: go to the next */
        uint64_t next = pos / w->seg_bytes + 1;
        if (next >= __atomic_load_n(&w->prepared, __ATOMIC_ACQUIRE) ||
            s->npieces + 2 > PIECES_MAX || room < WALREC_HEADER_BYTES + least)
            return NULL;
        if (left >= WALREC_HEADER_BYTES)
            walrec_skip(stage_take(s, pos, WALREC_HEADER_BYTES), left, pos, w->epoch);
        pos += left;
        w->written = pos;
        __atomic_store_n(&w->cur_seg, next, __ATOMIC_RELEASE);
        room = WAL_STAGE_BYTES - s->len;
        left = w->seg_bytes;
    }
    /* A record that ended exactly at a segment's end leaves pos at the next segment's
     * start without a skip record: that segment must be prepared too. */
    uint64_t seg = pos / w->seg_bytes;
    if (seg >= __atomic_load_n(&w->prepared, __ATOMIC_ACQUIRE))
        return NULL;
    if (seg != __atomic_load_n(&w->cur_seg, __ATOMIC_RELAXED))
        __atomic_store_n(&w->cur_seg, seg, __ATOMIC_RELEASE);
    if (room < least || s->npieces + 1 > PIECES_MAX)
        return NULL;
    size_t cap = room < left ? room : left;
    walrec_begin(&w->wr, s->buf + s->len, cap);
    w->rec_pos = pos;
    w->recording = true;
    return &w->wr;
}

uint64_t wal_finish(struct wal *w, int64_t now_ms, uint64_t mark)
{
    ASSERT(w->recording && w->wr.n > 0);
    size_t len = walrec_finish(&w->wr, w->rec_pos, now_ms, mark, w->epoch);
    uint8_t *p = stage_take(&w->stages[w->fill], w->rec_pos, len);
    ASSERT(p == w->wr.buf);
    w->written = w->rec_pos + len;
    w->recording = false;
    return w->written;
}

void wal_abandon(struct wal *w)
{
    ASSERT(w->recording);
    w->recording = false;
}

bool wal_kick(struct wal *w)
{
    ASSERT(!w->recording);
    struct stage *s = &w->stages[w->fill];
    if (w->busy || s->len == 0 || __atomic_load_n(&w->err, __ATOMIC_ACQUIRE))
        return false;
    pthread_mutex_lock(&w->mu);
    w->todo = s;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    w->busy = true;
    w->fill ^= 1;
    struct stage *next = &w->stages[w->fill];
    next->len = 0;
    next->npieces = 0;
    return true;
}

int wal_write_here(struct wal *w)
{
    ASSERT(!w->recording);
    struct stage *s = &w->stages[w->fill];
    int rc = __atomic_load_n(&w->err, __ATOMIC_ACQUIRE);
    if (rc || w->busy || s->len == 0)
        return rc;
    /* The syncer has nothing handed over, so it waits on cv and touches no file; the
     * mutex orders this write after its last one (segment descriptors included). */
    pthread_mutex_lock(&w->mu);
    rc = do_write(w, s);
    pthread_mutex_unlock(&w->mu);
    if (rc)
        __atomic_store_n(&w->err, rc, __ATOMIC_RELEASE);
    else
        __atomic_store_n(&w->durable, s->end, __ATOMIC_RELEASE);
    s->len = 0;
    s->npieces = 0;
    return rc;
}

bool wal_busy(const struct wal *w)
{
    return w->busy;
}

int wal_event_fd(const struct wal *w)
{
    return w->efd;
}

int wal_poll(struct wal *w)
{
    uint64_t n;
    if (read(w->efd, &n, sizeof(n)) == (ssize_t)sizeof(n))
        w->busy = false;
    return __atomic_load_n(&w->err, __ATOMIC_ACQUIRE);
}

uint64_t wal_written(const struct wal *w)
{
    return w->written;
}

uint64_t wal_durable(const struct wal *w)
{
    return __atomic_load_n(&w->durable, __ATOMIC_ACQUIRE);
}

void wal_get_stats(const struct wal *w, struct wal_stats *out)
{
    out->writes = __atomic_load_n(&w->stats.writes, __ATOMIC_RELAXED);
    out->syncs = __atomic_load_n(&w->stats.syncs, __ATOMIC_RELAXED);
    out->bytes = __atomic_load_n(&w->stats.bytes, __ATOMIC_RELAXED);
    out->sync_ns = __atomic_load_n(&w->stats.sync_ns, __ATOMIC_RELAXED);
    out->segments_made = __atomic_load_n(&w->stats.segments_made, __ATOMIC_RELAXED);
    out->segments_recycled = __atomic_load_n(&w->stats.segments_recycled, __ATOMIC_RELAXED);
}
