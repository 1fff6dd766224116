/*
 * Tests of the log part of store/check.c (check 6) and of wal_scan (store/wal.c). Each
 * case writes a shard's log through the real wal API (wal_open, wal_replay, wal_begin,
 * walrec_add, wal_finish, wal_kick, wal_poll) next to a real LMDB environment, sets
 * LMDB's "wal_pos", damages the log, and runs store_check:
 *   passes, with what the next start replays reported: an empty log, a log read from a
 *   checkpoint in its middle, a torn last record, a stale tail of an older epoch, a
 *   recycled segment's old records at the log's end, a wal-mode store stopped before
 *   its checkpoint (fork, _exit);
 *   fails, naming the damage: a flipped byte inside the log (in a record's body, in a
 *   length field, in a segment's skip record), wal_pos where no record starts, a record
 *   at wal_pos that claims another position, a missing segment (the one holding
 *   wal_pos, or one the log runs into), a segment of the wrong size, segment-bytes
 *   missing or invalid, a record whose CRC holds but whose operations do not decode;
 *   and the check changes nothing in the log's directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/api.h"
#include "store/check.h"
#include "store/crc32c.h"
#include "store/manifest.h"
#include "store/record.h"
#include "store/shard_store.h"
#include "store/wal.h"

#define SEG     ((uint64_t)256 << 10) /* 256 KiB segments: the log below spans three */
#define RECORDS 160
#define PER     10 /* operations per record */

struct fixture {
    char dir[64];                                  /* the data directory */
    char shard[96];                                /* its shard 0 */
    uint64_t pos[RECORDS + 16], end[RECORDS + 16]; /* each record's start and end */
    unsigned n;                                    /* records written */
};

static struct fixture fx;

static void rm_rf(const char *path)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    assert_int_equal(system(cmd), 0);
}

/* A data directory of one shard, its LMDB environment created (LMDB mode), no log. */
static int setup(void **state)
{
    (void)state;
    memset(&fx, 0, sizeof(fx));
    strcpy(fx.dir, "/tmp/rp_walcheck_XXXXXX");
    assert_non_null(mkdtemp(fx.dir));
    char err[256];
    assert_int_equal(store_manifest_open(fx.dir, 1, err, sizeof(err)), 0);
    struct shard_store *s;
    assert_int_equal(shard_store_open(&s, fx.dir, 0, NULL), 0);
    shard_store_close(s);
    snprintf(fx.shard, sizeof(fx.shard), "%s/shard-000", fx.dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    rm_rf(fx.dir);
    return 0;
}

/* ---- writing a log through the wal API ---------------------------------------------- */

static struct wal *open_wal(uint64_t from)
{
    struct wal_options opt = {.segment_bytes = SEG, .spares = 2};
    struct wal *w;
    char why[256];
    int rc = wal_open(&w, fx.shard, from, &opt, why, sizeof(why));
    if (rc)
        fail_msg("wal_open: %s", why);
    return w;
}

static struct op op_n(uint64_t n)
{
    static char body[200];
    memset(body, 'b', sizeof(body));
    struct op op;
    memset(&op, 0, sizeof(op));
    op.kind = OP_AUTHORIZE;
    op.amount = (int64_t)n + 1;
    op.merchant_id_len = 3;
    memcpy(op.merchant_id, "m-1", 4);
    memcpy(op.currency, "KRW", 4);
    /* a fixed width, so that every record has the same length */
    op.idem_key_len =
        (uint16_t)snprintf(op.idem_key, sizeof(op.idem_key), "k%06llu", (unsigned long long)n);
    op.fp_method = (struct engine_span){"POST", 4};
    op.fp_path = (struct engine_span){"/v1/payments/authorize", 22};
    op.fp_query = (struct engine_span){"", 0};
    op.fp_body = (struct engine_span){body, sizeof(body)};
    return op;
}

static void wait_write(struct wal *w)
{
    for (int i = 0; i < 5000 && wal_busy(w); i++) {
        struct pollfd p = {.fd = wal_event_fd(w), .events = POLLIN};
        poll(&p, 1, 10);
        assert_int_equal(wal_poll(w), 0);
    }
    assert_false(wal_busy(w));
    assert_int_equal(wal_poll(w), 0);
}

/* Appends n records of PER operations, a write every 4 records, all made durable;
 * records their positions in fx. */
static void append(struct wal *w, unsigned n)
{
    for (unsigned r = 0; r < n; r++) {
        struct walrec_writer *wr;
        while ((wr = wal_begin(w)) == NULL) {
            assert_true(wal_kick(w) || wal_busy(w));
            wait_write(w);
            assert_int_equal(wal_prepare(w, 0), 0);
        }
        for (unsigned k = 0; k < PER; k++) {
            struct op op = op_n((uint64_t)fx.n * PER + k);
            assert_int_equal(walrec_add(wr, &op), 0);
        }
        size_t len = wr->len;
        uint64_t end = wal_finish(w, 1000 + fx.n, 0);
        assert_true(fx.n < sizeof(fx.pos) / sizeof(fx.pos[0]));
        fx.pos[fx.n] = end - len;
        fx.end[fx.n] = end;
        fx.n++;
        if (r % 4 == 3) {
            wait_write(w);
            wal_kick(w);
        }
    }
    wait_write(w);
    if (wal_kick(w))
        wait_write(w);
    assert_true(wal_durable(w) == wal_written(w));
    assert_int_equal(wal_prepare(w, 0), 0); /* the spares, as the checkpointer keeps them */
}

/* A log of RECORDS records from position 0 (segments 0-2 used, 3-4 spares). */
static void write_log(void)
{
    struct wal *w = open_wal(0);
    assert_int_equal(wal_replay(w, NULL, NULL), 0);
    append(w, RECORDS);
    wal_close(w);
    assert_true(fx.end[RECORDS - 1] > 2 * SEG && fx.end[RECORDS - 1] < 3 * SEG);
}

/* ---- LMDB's wal_pos, the check, the files ----------------------------------------------- */

static void set_wal_pos(uint64_t pos)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, fx.shard, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, RECORD_DB_META, 0, &dbi), 0);
    uint8_t v[RECORD_I64_BYTES];
    record_i64_encode(v, (int64_t)pos);
    MDB_val key = {7, "wal_pos"}, val = {sizeof(v), v};
    assert_int_equal(mdb_put(txn, dbi, &key, &val, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static char rep[16384];

/* Runs store_check on the fixture; its result, its report in rep. */
static int run_check(void)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    int rc = store_check(fx.dir, f);
    rewind(f);
    size_t n = fread(rep, 1, sizeof(rep) - 1, f);
    rep[n] = '\0';
    fclose(f);
    return rc;
}

/* Asserts that the report holds the formatted text. */
static void expect(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void expect(const char *fmt, ...)
{
    char want[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(want, sizeof(want), fmt, ap);
    va_end(ap);
    if (strstr(rep, want) == NULL)
        fail_msg("the report lacks \"%s\":\n%s", want, rep);
}

static void expect_pass(void)
{
    int rc = run_check();
    if (rc != 0)
        fail_msg("check failed (%d):\n%s", rc, rep);
    expect("; OK\n");
    assert_null(strstr(rep, "log problem"));
}

/* Fails unless the check fails with exactly `problems` problems. */
static void expect_fail(unsigned problems)
{
    int rc = run_check();
    if (rc != 1)
        fail_msg("check did not fail (%d):\n%s", rc, rep);
    expect("; FAILED: %u problems\n", problems);
}

static void seg_name(uint64_t seg, char *out, size_t cap)
{
    snprintf(out, cap, "%s/wal/%016llx.log", fx.shard, (unsigned long long)seg);
}

/* Reads or writes len bytes at log position pos (one segment). */
static void log_io(uint64_t pos, void *buf, size_t len, bool write)
{
    char path[160];
    seg_name(pos / SEG, path, sizeof(path));
    int fd = open(path, write ? O_WRONLY : O_RDONLY);
    assert_true(fd >= 0);
    ssize_t n =
        write ? pwrite(fd, buf, len, (off_t)(pos % SEG)) : pread(fd, buf, len, (off_t)(pos % SEG));
    assert_int_equal(n, (ssize_t)len);
    close(fd);
}

static void flip(uint64_t pos)
{
    uint8_t b;
    log_io(pos, &b, 1, false);
    b ^= 0x10;
    log_io(pos, &b, 1, true);
}

static void zero(uint64_t pos, size_t len)
{
    static const uint8_t zeros[1 << 16];
    assert_true(len <= sizeof(zeros));
    log_io(pos, (void *)zeros, len, true);
}

static void write_file(const char *name, const char *text)
{
    char path[160];
    snprintf(path, sizeof(path), "%s/wal/%s", fx.shard, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* ---- passes ------------------------------------------------------------------------- */

static void test_empty_log_passes(void **state)
{
    (void)state;
    struct wal *w = open_wal(0);
    assert_int_equal(wal_replay(w, NULL, NULL), 0);
    wal_close(w);
    expect_pass();
    expect("shard 0: log: segment-bytes 262144, epoch 1, 3 segment files (indexes, hex): 0-2\n");
    expect("shard 0: log: from wal_pos 0 (none in LMDB): 0 records, 0 operations to replay; "
           "ends at 0: end of written data\n");
    /* The summary keeps its fields and adds the log's. */
    expect("check: 1 shards, 0 payments, 0 ledger entries, 0 events; clearing 0 pending 0 "
           "available 0; log: 0 records, 0 operations to replay; OK\n");
}

static void test_log_from_a_checkpoint_passes(void **state)
{
    (void)state;
    write_log();
    uint64_t end = fx.end[RECORDS - 1];
    set_wal_pos(fx.end[99]);
    expect_pass();
    expect("shard 0: log: segment-bytes 262144, epoch 1, 5 segment files (indexes, hex): 0-4\n");
    expect("shard 0: log: from wal_pos %llu: %u records, %u operations to replay (%u "
           "authorize, 0 capture, 0 void, 0 refund); ends at %llu: end of written data\n",
           (unsigned long long)fx.end[99], RECORDS - 100, (RECORDS - 100) * PER,
           (RECORDS - 100) * PER, (unsigned long long)end);
    expect("; log: %u records, %u operations to replay; OK\n", RECORDS - 100,
           (RECORDS - 100) * PER);
    /* Everything in the checkpoint; and a checkpoint at a segment's start. */
    set_wal_pos(end);
    expect_pass();
    expect("from wal_pos %llu: 0 records, 0 operations to replay; ends at %llu: end of "
           "written data\n",
           (unsigned long long)end, (unsigned long long)end);
    unsigned k = 0;
    while (fx.pos[k] != SEG)
        k++;
    set_wal_pos(SEG);
    expect_pass();
    expect("from wal_pos %llu: %u records", (unsigned long long)SEG, RECORDS - k);
}

static void test_torn_last_record_passes(void **state)
{
    (void)state;
    write_log();
    uint64_t last = fx.pos[RECORDS - 1], len = fx.end[RECORDS - 1] - last;
    uint8_t saved[8192];
    assert_true(len <= sizeof(saved));
    log_io(last, saved, len, false);
    /* Cut in the body, in the header, and before the first byte. */
    const uint64_t cuts[] = {len / 2, 20, 0};
    const char *const why[] = {"torn or corrupt record", "torn or corrupt record",
                               "end of written data"};
    for (int i = 0; i < 3; i++) {
        zero(last + cuts[i], len - cuts[i]);
        expect_pass();
        expect("from wal_pos 0 (none in LMDB): %u records, %u operations to replay (%u "
               "authorize, 0 capture, 0 void, 0 refund); ends at %llu: %s",
               RECORDS - 1, (RECORDS - 1) * PER, (RECORDS - 1) * PER, (unsigned long long)last,
               why[i]);
        log_io(last, saved, len, true);
    }
    expect_pass();
    expect("%u records", RECORDS);
}

/* A power cut lost the first bytes of a write whose later records reached the disk; the
 * next epoch wrote over the start: the old records after it are stale (as in
 * wal_test's test_stale_records_after_the_end). */
static void test_stale_tail_passes(void **state)
{
    (void)state;
    struct wal *w = open_wal(0);
    assert_int_equal(wal_replay(w, NULL, NULL), 0);
    append(w, 10);
    uint64_t cut = wal_written(w);
    append(w, 10);
    wal_close(w);
    zero(cut, 8);
    fx.n = 10;
    w = open_wal(0);
    assert_int_equal(wal_replay(w, NULL, NULL), 0);
    append(w, 1); /* as long as the lost record: the next old one is stale */
    wal_close(w);
    expect_pass();
    expect("shard 0: log: segment-bytes 262144, epoch 2,");
    expect("11 records, 110 operations to replay (110 authorize, 0 capture, 0 void, 0 "
           "refund); ends at %llu: stale record of epoch 1 after epoch 2 (left by a write "
           "that never completed)\n",
           (unsigned long long)fx.end[10]);
}

/* A spare segment recycled from below the checkpoint keeps its old records at their
 * offsets: where the log has not reached yet they are the end of written data. */
static void test_recycled_segment_passes(void **state)
{
    (void)state;
    write_log();
    char from[160], to[160];
    seg_name(0, from, sizeof(from));
    seg_name(4, to, sizeof(to));
    assert_int_equal(rename(from, to), 0); /* as wal_prepare recycles segment 0 */
    uint64_t end = fx.end[RECORDS - 1];
    /* LMDB covers everything; the writer would enter segment 3, then 4. */
    set_wal_pos(end);
    expect_pass();
    set_wal_pos(4 * SEG);
    expect_pass();
    expect("from wal_pos %llu: 0 records, 0 operations to replay; ends at %llu: end of "
           "written data (a recycled segment's old record of position 0)\n",
           (unsigned long long)(4 * SEG), (unsigned long long)(4 * SEG));
    expect("4 segment files (indexes, hex): 1-4\n");
}

/* A real wal-mode store, its batches durable in the log, ended before any checkpoint
 * (_exit in a child): LMDB holds nothing, the log everything. */
static void test_store_stopped_before_its_checkpoint_passes(void **state)
{
    (void)state;
    rm_rf(fx.dir);
    assert_int_equal(mkdir(fx.dir, 0700), 0);
    char err[256];
    assert_int_equal(store_manifest_open(fx.dir, 1, err, sizeof(err)), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct shard_store_options opt = {.wal = 1,
                                          .wal_segment_bytes = SEG,
                                          .overlay_bytes = (size_t)16 << 20,
                                          .checkpoint_ops = 1000000,
                                          .checkpoint_ms = 600000};
        struct shard_store *s;
        if (shard_store_open(&s, fx.dir, 0, &opt) != 0)
            _exit(2);
        for (int i = 0; i < 5; i++) {
            struct op op;
            struct api_error e;
            char body[96], key[16], out[ENGINE_ANSWER_MAX_BYTES];
            snprintf(body, sizeof(body),
                     "{\"merchant_id\":\"m-1\",\"amount\":%d,\"currency\":\"KRW\"}", 100 + i);
            snprintf(key, sizeof(key), "a%d", i);
            struct api_request q = {.method = {"POST", 4},
                                    .path = {"/v1/payments/authorize", 22},
                                    .body = {body, strlen(body)},
                                    .idem_key = {key, strlen(key)}};
            if (api_decode(&q, 1, &op, &e) != 0)
                _exit(3);
            struct batch_item it = {.op = &op, .answer = {.body = out, .cap = sizeof(out)}};
            if (shard_store_apply_batch(s, &it, 1, 1764064800000 + i) != 0 || it.rc != 0)
                _exit(4);
            shard_store_kick(s);
        }
        for (int i = 0; i < 5000 && shard_store_durable(s) < shard_store_written(s); i++) {
            struct pollfd p = {.fd = shard_store_event_fd(s), .events = POLLIN};
            poll(&p, 1, 10);
            if (shard_store_poll(s) != 0)
                _exit(5);
        }
        _exit(shard_store_durable(s) >= shard_store_written(s) ? 0 : 6);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    expect_pass();
    expect("check: 1 shards, 0 payments, 0 ledger entries, 0 events;");
    expect("shard 0: log: from wal_pos 0 (none in LMDB): 5 records, 5 operations to replay (5 "
           "authorize, 0 capture, 0 void, 0 refund); ends at ");
    expect(": end of written data\n");
    expect("; log: 5 records, 5 operations to replay; OK\n");
}

/* ---- fails ---------------------------------------------------------------------------- */

static void test_flipped_byte_in_the_middle_fails(void **state)
{
    (void)state;
    write_log();
    uint64_t end = fx.end[RECORDS - 1];
    assert_true(fx.pos[101] == fx.end[100] && fx.pos[101] / SEG == fx.pos[100] / SEG);
    assert_true(fx.pos[150] % SEG + 4096 <= SEG);
    expect_pass();
    /* In a record's body, and in its length field (the records after it are found by
     * their magic and position, not through the damaged length). */
    const uint64_t at[] = {(fx.pos[100] + fx.end[100]) / 2, fx.pos[100] + 5};
    for (int i = 0; i < 2; i++) {
        flip(at[i]);
        expect_fail(1);
        expect("shard 0: log: from wal_pos 0 (none in LMDB): 100 records, 1000 operations to "
               "replay");
        expect("ends at %llu: torn or corrupt record", (unsigned long long)fx.pos[100]);
        expect("shard 0: log problem: the log breaks at %llu, but %u valid records (%u "
               "operations) of epoch 1 or later follow, from %llu to %llu: damage inside the "
               "log, not a torn tail; the next start would replay up to %llu only\n",
               (unsigned long long)fx.pos[100], RECORDS - 101, (RECORDS - 101) * PER,
               (unsigned long long)fx.pos[101], (unsigned long long)end,
               (unsigned long long)fx.pos[100]);
        flip(at[i]);
        expect_pass();
    }
    /* In the skip record that ends segment 0: what follows is at segment 1's start. */
    unsigned k = 0;
    while (fx.pos[k + 1] != SEG)
        k++;
    assert_true(fx.end[k] < SEG && SEG - fx.end[k] >= WALREC_HEADER_BYTES);
    flip(fx.end[k] + 9); /* its CRC */
    expect_fail(1);
    expect("ends at %llu: torn or corrupt record", (unsigned long long)fx.end[k]);
    expect("the log breaks at %llu, but %u valid records (%u operations) of epoch 1 or later "
           "follow, from %llu to %llu",
           (unsigned long long)fx.end[k], RECORDS - 1 - k, (RECORDS - 1 - k) * PER,
           (unsigned long long)SEG, (unsigned long long)end);
    flip(fx.end[k] + 9);
    /* Zeros over a page in the middle: a clean-looking end, but records follow. */
    uint8_t saved[4096];
    log_io(fx.pos[150], saved, sizeof(saved), false);
    zero(fx.pos[150], sizeof(saved));
    expect_fail(1);
    expect("ends at %llu: end of written data", (unsigned long long)fx.pos[150]);
    expect("the log breaks at %llu, but", (unsigned long long)fx.pos[150]);
    log_io(fx.pos[150], saved, sizeof(saved), true);
    expect_pass();
}

static void test_wal_pos_where_no_record_starts_fails(void **state)
{
    (void)state;
    write_log();
    set_wal_pos(fx.pos[100] + 10);
    int rc = run_check();
    assert_int_equal(rc, 1);
    expect("shard 0: log problem: LMDB's wal_pos %llu is not where a record starts: the "
           "record at %llu runs to %llu (positions not contiguous)\n",
           (unsigned long long)fx.pos[100] + 10, (unsigned long long)fx.pos[100],
           (unsigned long long)fx.end[100]);
    /* Inside the last record: nothing valid follows, the chain before it tells. */
    set_wal_pos(fx.pos[RECORDS - 1] + 10);
    expect_fail(1);
    expect("LMDB's wal_pos %llu is not where a record starts: the record at %llu runs to %llu",
           (unsigned long long)fx.pos[RECORDS - 1] + 10, (unsigned long long)fx.pos[RECORDS - 1],
           (unsigned long long)fx.end[RECORDS - 1]);
    /* Past the log's end (in its zeros): the records before it cannot reach it, which
     * is reported; LMDB already holds whatever they were. */
    uint64_t past = fx.end[RECORDS - 1] + 100;
    set_wal_pos(past);
    expect_pass();
    expect("from wal_pos %llu: 0 records, 0 operations to replay; ends at %llu: end of written "
           "data; wal_pos not compared with the records before it (they end at %llu)\n",
           (unsigned long long)past, (unsigned long long)past,
           (unsigned long long)fx.end[RECORDS - 1]);
}

static void test_record_claiming_another_position_fails(void **state)
{
    (void)state;
    write_log();
    uint64_t len = fx.end[100] - fx.pos[100];
    assert_true(fx.end[101] - fx.pos[101] == len);
    uint8_t rec[8192];
    assert_true(len <= sizeof(rec));
    log_io(fx.pos[100], rec, len, false);
    log_io(fx.pos[101], rec, len, true); /* record 100's bytes where 101 was */
    set_wal_pos(fx.pos[101]);
    expect_fail(2);
    expect("ends at %llu: a record that claims position %llu", (unsigned long long)fx.pos[101],
           (unsigned long long)fx.pos[100]);
    expect("shard 0: log problem: the record at LMDB's wal_pos %llu claims position %llu "
           "(positions not contiguous)\n",
           (unsigned long long)fx.pos[101], (unsigned long long)fx.pos[100]);
    /* and the records after it are still there */
    expect("the log breaks at %llu, but %u valid records", (unsigned long long)fx.pos[101],
           RECORDS - 102);
}

static void test_missing_segment_fails(void **state)
{
    (void)state;
    write_log();
    char path[160];
    seg_name(1, path, sizeof(path));
    char keep[200];
    snprintf(keep, sizeof(keep), "%s.keep", path);
    assert_int_equal(rename(path, keep), 0);
    /* The segment holding wal_pos. */
    set_wal_pos(SEG);
    expect_fail(1);
    expect("4 segment files (indexes, hex): 0, 2-4\n");
    unsigned k = 0; /* the first record of segment 2 */
    while (fx.pos[k] != 2 * SEG)
        k++;
    expect("shard 0: log problem: segment 0000000000000001.log, which holds LMDB's wal_pos "
           "%llu, is missing while later segments exist (positions not contiguous); %u valid "
           "records (%u operations) of epoch 1 or later follow, from %llu to %llu\n",
           (unsigned long long)SEG, RECORDS - k, (RECORDS - k) * PER, (unsigned long long)(2 * SEG),
           (unsigned long long)fx.end[RECORDS - 1]);
    /* A segment the log runs into from wal_pos. */
    set_wal_pos(0);
    expect_fail(1);
    expect("shard 0: log problem: the log goes on at %llu in segment 0000000000000001.log, "
           "which is missing while later segments exist; %u valid records",
           (unsigned long long)SEG, RECORDS - k);
    assert_int_equal(rename(keep, path), 0);
    expect_pass();
    /* A spare missing at the top is no gap in the log. */
    seg_name(4, path, sizeof(path));
    assert_int_equal(unlink(path), 0);
    expect_pass();
}

static void test_wrong_size_segment_fails(void **state)
{
    (void)state;
    write_log();
    char path[160];
    seg_name(3, path, sizeof(path));
    assert_int_equal(truncate(path, (off_t)SEG / 2), 0);
    expect_fail(1);
    expect("shard 0: log problem: segment 0000000000000003.log has 131072 bytes, not 262144\n");
    assert_int_equal(truncate(path, (off_t)SEG), 0); /* a spare: zeros again */
    expect_pass();
    seg_name(0, path, sizeof(path));
    assert_int_equal(truncate(path, (off_t)SEG + 1), 0);
    expect_fail(1);
    expect("segment 0000000000000000.log has 262145 bytes, not 262144\n");
}

static void test_segment_bytes_missing_or_invalid_fails(void **state)
{
    (void)state;
    write_log();
    char path[160];
    snprintf(path, sizeof(path), "%s/wal/segment-bytes", fx.shard);
    assert_int_equal(unlink(path), 0);
    expect_fail(1);
    expect("shard 0: log: segment-bytes missing, epoch 1, 5 segment files");
    expect("shard 0: log problem: segment-bytes is missing but 5 segment files exist: their "
           "positions cannot be read\n");
    const char *const bad[] = {"262144x\n", "100\n", "", "-262144\n"};
    for (int i = 0; i < 4; i++) {
        write_file("segment-bytes", bad[i]);
        expect_fail(1);
        expect("shard 0: log: segment-bytes invalid,");
        expect("shard 0: log problem: segment-bytes does not hold a valid segment size\n");
    }
    write_file("segment-bytes", "262144\n");
    expect_pass();
}

static void test_record_whose_operations_do_not_decode_fails(void **state)
{
    (void)state;
    write_log();
    uint64_t at = fx.pos[150], len = fx.end[150] - at;
    uint8_t rec[8192];
    log_io(at, rec, len, false);
    rec[WALREC_HEADER_BYTES] = 99; /* the first operation's kind */
    uint32_t crc = crc32c(0, rec + 12, len - 12);
    for (int i = 0; i < 4; i++)
        rec[8 + i] = (uint8_t)(crc >> (8 * i));
    log_io(at, rec, len, true);
    expect_fail(1);
    expect("shard 0: log problem: 1 records (the first at %llu) pass their CRC but their "
           "operations do not decode: the next start cannot replay them\n",
           (unsigned long long)at);
}

/* ---- read-only ------------------------------------------------------------------------ */

static int cmp_name(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Names, sizes, modification times and a hash of the content of every file in the
 * log's directory, and the directory's own times. */
static void snapshot(char *out, size_t cap)
{
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/wal", fx.shard);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    size_t len = (size_t)snprintf(out, cap, "dir %lld.%ld\n", (long long)st.st_mtim.tv_sec,
                                  st.st_mtim.tv_nsec);
    DIR *d = opendir(dir);
    assert_non_null(d);
    char names[32][256];
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.' && n < 32)
            snprintf(names[n++], sizeof(names[0]), "%s", e->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof(names[0]), cmp_name);
    for (int i = 0; i < n; i++) {
        char path[8192 + 300];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        assert_int_equal(stat(path, &st), 0);
        uint64_t h = 14695981039346656037ull;
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        for (int c; (c = fgetc(f)) != EOF;)
            h = (h ^ (uint8_t)c) * 1099511628211ull;
        fclose(f);
        len += (size_t)snprintf(out + len, cap - len, "%s %lld %lld.%ld %llx\n", names[i],
                                (long long)st.st_size, (long long)st.st_mtim.tv_sec,
                                st.st_mtim.tv_nsec, (unsigned long long)h);
        assert_true(len < cap);
    }
}

static void test_check_changes_nothing(void **state)
{
    (void)state;
    write_log();
    zero(fx.pos[RECORDS - 1] + 30, 40); /* a torn tail */
    flip(fx.pos[100] + 60);             /* damage in the middle */
    set_wal_pos(fx.end[10]);
    static char before[8192], after[8192];
    snapshot(before, sizeof(before));
    expect_fail(1);
    snapshot(after, sizeof(after));
    assert_string_equal(before, after);
    /* Without segment-bytes (which wal_open would write) or an epoch file. */
    char path[160];
    snprintf(path, sizeof(path), "%s/wal/segment-bytes", fx.shard);
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof(path), "%s/wal/epoch", fx.shard);
    assert_int_equal(unlink(path), 0);
    snapshot(before, sizeof(before));
    expect_fail(1);
    expect("shard 0: log: segment-bytes missing, epoch file missing, 5 segment files");
    snapshot(after, sizeof(after));
    assert_string_equal(before, after);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_empty_log_passes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_from_a_checkpoint_passes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_last_record_passes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_tail_passes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recycled_segment_passes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_stopped_before_its_checkpoint_passes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_flipped_byte_in_the_middle_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wal_pos_where_no_record_starts_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_claiming_another_position_fails, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_missing_segment_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_size_segment_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_segment_bytes_missing_or_invalid_fails, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_record_whose_operations_do_not_decode_fails, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_check_changes_nothing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
