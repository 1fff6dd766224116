/*
 * Power-loss test of the durability promise (SPEC §6, docs/durability.md): an answer
 * leaves only after the fdatasync that covers it completed, so a power cut after an
 * answer never loses it.
 *
 * The real engine (`ringpay serve --cores 2`) runs under the LD_PRELOAD shim
 * (pl_shim.c): its files reach the shadow "disk" only when fsynced, and names only when
 * their directory is fsynced. A cycle: a workload on loopback, a cut at a random moment
 * (SIGKILL, then the data directory is rebuilt from the shadow alone, pl_disk.c), then:
 *   - `ringpay check --data` passes on what is left;
 *   - the engine restarts on it, and every answered (2xx) change is present in at least
 *     its answered state, and every answered request sent again with its key replays
 *     the identical status and bytes (this cycle's answers all, older ones sampled);
 * and the next cycle's workload runs on that engine.
 *
 * The workload mixes new authorizations, captures, voids, refunds and idempotent
 * replays (half of them of answers just received). Some connections only replay: while
 * a writer waits for the answer of its commit, the batches the shard takes meanwhile
 * are replays only, right after a commit (the defect of issue 6: such a batch commits
 * nothing and runs no fsync). Two cycles of three run few connections (4, one request
 * in flight each, two of them replaying), the third many (64, four pipelined each, a
 * quarter replaying, the rest a third), all driven by one poll() loop. Every fsync
 * of the engine takes RINGPAY_POWERLOSS_SYNC_US (default 1000) before it lands, like a
 * device would, which keeps the windows between a write and its sync open.
 *
 * A second test injects a failing fsync (EIO, then ENOSPC, once each) through the shim:
 * the request whose commit fails and every later one on that shard are 503, /readyz
 * turns 503, and after a cut nothing answered is lost.
 *
 * Checkpoints (the write-ahead log mode, store/shard_wal.c): the logs' segments are 1 MiB
 * (--wal-segment-mb 1, fixed when a log is created) and request bodies carry up to 2 KiB
 * of spaces (the same for every sending of a key), so the logs go through segments and
 * recycle them within a short run. Two cycles of three run the engine with checkpoints
 * all the time (--checkpoint-ops 64 --checkpoint-ms 20 --overlay-mb 4: LMDB commits,
 * segment preparation and recycling go on constantly); the third runs the defaults (a
 * checkpoint every 2 s: mostly replays of the log). In half of the checkpoint cycles the
 * cut is aimed at a checkpoint: it comes as soon as a shard's LMDB file has writes that
 * no fsync landed yet (a checkpoint between its page writes and its commit's sync); in a
 * quarter at a segment's preparation (log directory names not synced yet: directory
 * fsyncs take as long as file fsyncs here), if one comes within AIM_MAX_MS. After each
 * cut the test tells from the shadow where it fell (LMDB writes lost: a checkpoint cut
 * short; log directory names not synced: a segment being prepared or recycled), and the
 * run fails unless some cut fell inside a checkpoint.
 *
 * A third test runs the cuts with the engine replicating to a Kafka-protocol cluster
 * in a process of its own (rp_mock_kafka, which survives the cuts), with linger.ms=0 so
 * that each event leaves as soon as the engine lets it. After the last restart every
 * event is in Kafka once or more, per shard without a hole up to the engine's last
 * event, every copy of an event_id has the same bytes, and each payment's last event
 * equals the payment the engine shows. An engine that sent events before their commit
 * was durable fails this in 5 of 5 runs: a cut loses the commit, and its event ids
 * come back with other content (RINGPAY_POWERLOSS_KAFKA_CUTS, default 6).
 *
 * Cuts: RINGPAY_POWERLOSS_CUTS (default 20; ctest's powerloss_test runs 15 and
 * powerloss_test_long 200). The seed is printed and can be fixed with
 * RINGPAY_POWERLOSS_SEED. Every wait is bounded; only loopback is used.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "engine/limits.h"
#include "harness.h"
#include "pay_client.h"
#include "kafka_client.h"
#include "pl_disk.h"

#define CUTS_DEFAULT     20
#define CUTS_MAX         1000
#define CONNS_MAX        64
#define DEPTH_MAX        4
#define MIN_ACKS         30   /* answers to wait for before a cut may come */
#define WARMUP_MAX_MS    8000 /* ... at most this long */
#define CUT_WINDOW_MS    400  /* the cut comes 0..this after the warm-up */
#define DRAIN_MS         1000 /* after the cut: answers already on the wire are read */
#define SAMPLE_OLD       150  /* older answers re-verified after each cut */
#define ACKS_MAX         200000
#define PAYS_MAX         100000
#define PAD_MAX          2048 /* bodies carry 0..PAD_MAX spaces, by key: the log grows */
#define OUT_CAP          (DEPTH_MAX * (512 + PAD_MAX))
#define IN_CAP           (64 * 1024)
#define START_TIMEOUT_MS 30000 /* an ASan build starts slowly */
#define AIM_MAX_MS       600   /* an aimed cut waits this long at most for a checkpoint */

static const char *const merchants[] = {"pl-a", "pl-b", "pl-c", "pl-d", "pl-e", "pl-f"};
#define MERCHANTS (sizeof(merchants) / sizeof(merchants[0]))

enum kind { K_AUTH, K_CAPTURE, K_VOID, K_REFUND, K_REPLAY };
enum pay_state { ST_AUTHORIZED, ST_VOIDED, ST_CAPTURED, ST_PART_REFUNDED, ST_REFUNDED };

/* One answered (2xx) state-changing request: enough to send it again and compare. */
struct ack {
    char key[48];
    char path[64];
    char body[96];
    int status;
    char *answer; /* malloc'd body bytes */
    size_t answer_len;
    int cycle;
};

/* What the answers said about one payment (the least the engine must still show). */
struct pay {
    char id[32];
    long long amount, captured, refunded;
    enum pay_state state;
    bool busy;      /* a request for it is in flight */
    bool uncertain; /* a request for it went unanswered at a cut: never used again */
    int cycle;      /* last cycle that acknowledged a change of it */
};

struct req {
    enum kind kind;
    int pay;    /* K_CAPTURE, K_VOID, K_REFUND: index in book.pays */
    int replay; /* K_REPLAY: index in book.acks */
    long long amount;
    char key[48], path[64], body[96];
};

struct conn {
    int fd;
    bool dead;
    int replay_pct; /* share of replays among its requests */
    char out[OUT_CAP];
    size_t out_len, out_off;
    char in[IN_CAP];
    size_t in_len;
    struct req q[DEPTH_MAX];
    int qh, qn;
};

static struct {
    struct ack *acks;
    int nacks;
    struct pay *pays;
    int npays;
    unsigned long keyseq;
    char error[1024];
    unsigned seed;
} book;

/* ---- the engine under the shim ----------------------------------------------------- */

struct engine {
    const char *extra[8]; /* more serve flags, NULL-terminated (the Kafka test's) */
    pid_t pid;
    int port;
    char dir[PATH_MAX];
    char root[PATH_MAX + 16];   /* the data directory: the shim's root */
    char shadow[PATH_MAX + 16]; /* the shadow disk */
    char log[PATH_MAX + 16];
    long sync_us;
    bool ckpt; /* the next start runs checkpoints all the time */
};

/* Where the cuts fell (see the top of the file). */
static struct {
    int ckpt_cycles, aimed, in_checkpoint, in_prepare;
    unsigned long seg_max, files_max;
} where;

static struct engine eng;

static void engine_dump_log(void)
{
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof(cmd), "tail -c 4000 '%s' >&2", eng.log);
    if (system(cmd) != 0)
        fprintf(stderr, "(no log)\n");
}

static void engine_child(const char *port_arg)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int logfd = open(eng.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    int null_fd = open("/dev/null", O_RDONLY);
    if (logfd < 0 || null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(logfd, 1) < 0 ||
        dup2(logfd, 2) < 0)
        _exit(126);
    for (char **e = environ; *e;) {
        if (strncmp(*e, "RINGPAY_", 8) == 0) {
            char name[128];
            snprintf(name, sizeof(name), "%.*s", (int)strcspn(*e, "="), *e);
            unsetenv(name);
        } else {
            e++;
        }
    }
    char sync_us[32], asan[512];
    snprintf(sync_us, sizeof(sync_us), "%ld", eng.sync_us);
    const char *old = getenv("ASAN_OPTIONS");
    /* The shim comes first in the library list; ASan accepts that when told. */
    snprintf(asan, sizeof(asan), "%s%sverify_asan_link_order=0", old ? old : "", old ? ":" : "");
    setenv("LD_PRELOAD", RP_PL_SHIM, 1);
    setenv("RP_PL_ROOT", eng.root, 1);
    setenv("RP_PL_SHADOW", eng.shadow, 1);
    setenv("RP_PL_SYNC_US", sync_us, 1);
    setenv("RP_PL_DIR_SYNC_US", sync_us, 1); /* a rename stays undone that long */
    setenv("ASAN_OPTIONS", asan, 1);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    const char *argv[40] = {
        RINGPAY_BIN, "serve",       "--listen", port_arg, "--data", eng.root,           "--cores",
        "2",         "--log-level", "warn",     "--auth", "off",    "--wal-segment-mb", "1"};
    int argc = 14;
    if (eng.ckpt) {
        static const char *const ckpt[] = {"--checkpoint-ops", "64", "--checkpoint-ms", "20",
                                           "--overlay-mb",     "4"};
        for (size_t i = 0; i < sizeof(ckpt) / sizeof(ckpt[0]); i++)
            argv[argc++] = ckpt[i];
    }
    for (int i = 0; eng.extra[i] && argc < 39; i++)
        argv[argc++] = eng.extra[i];
    argv[argc] = NULL;
    execv(RINGPAY_BIN, (char *const *)argv);
    _exit(127);
}

static bool engine_ready(void)
{
    struct rp_response r;
    if (rp_request(eng.port, "GET", "/readyz", NULL, NULL, &r) != 0)
        return false;
    bool ok = r.status == 200;
    rp_response_free(&r);
    return ok;
}

/* Starts the engine on eng.root under the shim and waits for /readyz. */
static void engine_start(void)
{
    eng.port = rp_pick_port();
    assert_true(eng.port > 0);
    char port_arg[64];
    snprintf(port_arg, sizeof(port_arg), "127.0.0.1:%d", eng.port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        engine_child(port_arg);
    eng.pid = pid;
    int64_t deadline = rp_now_ms() + START_TIMEOUT_MS;
    while (rp_now_ms() < deadline) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            eng.pid = 0;
            engine_dump_log();
            fail_msg("the engine exited during start (status %d)", st);
        }
        if (engine_ready())
            return;
        rp_sleep_ms(20);
    }
    engine_dump_log();
    fail_msg("the engine was not ready within %d ms", START_TIMEOUT_MS);
}

/* The power cut: SIGKILL, reaped. Fails the test if the engine had died by itself. */
static void engine_kill(void)
{
    int st = 0;
    if (waitpid(eng.pid, &st, WNOHANG) == eng.pid) {
        eng.pid = 0;
        engine_dump_log();
        fail_msg("the engine died before the cut (status %d)", st);
    }
    kill(eng.pid, SIGKILL);
    assert_int_equal(waitpid(eng.pid, &st, 0), eng.pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    eng.pid = 0;
}

/* SIGTERM; waits (bounded); returns the exit code or -1. */
static int engine_stop(void)
{
    kill(eng.pid, SIGTERM);
    int64_t deadline = rp_now_ms() + RP_STOP_TIMEOUT_MS;
    int st = 0;
    while (rp_now_ms() < deadline) {
        if (waitpid(eng.pid, &st, WNOHANG) == eng.pid) {
            eng.pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        rp_sleep_ms(10);
    }
    kill(eng.pid, SIGKILL);
    waitpid(eng.pid, &st, 0);
    eng.pid = 0;
    return -1;
}

static void run_check(const char *when)
{
    static struct rp_run_result res;
    const char *const args[] = {"check", "--data", eng.root, NULL};
    int err = rp_run(args, NULL, NULL, 60000, &res);
    if (err || res.code != 0 || !strstr(res.out, "; OK"))
        fail_msg("ringpay check %s exited %d (%d):\n%s%s", when, res.code, err, res.out, res.err);
}

/* The cut's second half: the data directory becomes what the shadow holds. */
static void rebuild(void)
{
    int rc = pl_disk_rebuild(eng.shadow, eng.root);
    if (rc)
        fail_msg("rebuilding %s from the shadow: %s", eng.root, strerror(-rc));
}

static void setup_dirs(void)
{
    memset(&eng, 0, sizeof(eng)); /* no extra flags */
    snprintf(eng.dir, sizeof(eng.dir), "/tmp/ringpay-powerloss-XXXXXX");
    assert_non_null(mkdtemp(eng.dir));
    snprintf(eng.root, sizeof(eng.root), "%s/data", eng.dir);
    snprintf(eng.shadow, sizeof(eng.shadow), "%s/shadow", eng.dir);
    snprintf(eng.log, sizeof(eng.log), "%s/engine.log", eng.dir);
    assert_int_equal(mkdir(eng.root, 0700), 0);
    assert_int_equal(mkdir(eng.shadow, 0700), 0);
    const char *us = getenv("RINGPAY_POWERLOSS_SYNC_US");
    eng.sync_us = us ? atol(us) : 1000;
}

static void kc_cleanup(void);

static int teardown(void **state)
{
    (void)state;
    kc_cleanup();
    if (eng.pid > 0) {
        kill(eng.pid, SIGKILL);
        waitpid(eng.pid, NULL, 0);
        eng.pid = 0;
    }
    if (eng.dir[0]) {
        char cmd[PATH_MAX + 32];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", eng.dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", eng.dir);
    }
    for (int i = 0; i < book.nacks; i++)
        free(book.acks[i].answer);
    free(book.acks);
    free(book.pays);
    memset(&book, 0, sizeof(book));
    return 0;
}

/* ---- the workload ------------------------------------------------------------------ */

static void set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void set_error(const char *fmt, ...)
{
    if (book.error[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(book.error, sizeof(book.error), fmt, ap);
    va_end(ap);
}

static int rnd(int n)
{
    return (int)(rand_r(&book.seed) % (unsigned)n);
}

/* A payment in one of the given states that nothing is in flight for, or -1. */
static int pick_pay(bool (*ok)(const struct pay *))
{
    if (book.npays == 0)
        return -1;
    for (int tries = 0; tries < 16; tries++) {
        int window = book.npays < 512 ? book.npays : 512;
        int i = book.npays - 1 - rnd(window);
        struct pay *p = &book.pays[i];
        if (!p->busy && !p->uncertain && ok(p))
            return i;
    }
    return -1;
}

static bool can_capture(const struct pay *p)
{
    return p->state == ST_AUTHORIZED;
}

static bool can_refund(const struct pay *p)
{
    return (p->state == ST_CAPTURED || p->state == ST_PART_REFUNDED) && p->captured > p->refunded;
}

static void new_key(struct req *q, const char *what)
{
    snprintf(q->key, sizeof(q->key), "pl-%u-%lu-%s", book.seed % 100000, ++book.keyseq, what);
}

/* Chooses the next request: a replay with probability replay_pct %, else a change. */
static void gen(struct req *q, int replay_pct)
{
    memset(q, 0, sizeof(*q));
    if (rnd(100) < replay_pct && book.nacks > 0) {
        q->kind = K_REPLAY;
        /* Half of the replays are of answers just received: their state was committed
         * a moment ago, and their batch is often made of replays only. */
        int recent = book.nacks < 32 ? book.nacks : 32;
        q->replay = rnd(2) ? book.nacks - 1 - rnd(recent) : rnd(book.nacks);
        const struct ack *a = &book.acks[q->replay];
        memcpy(q->key, a->key, sizeof(q->key));
        memcpy(q->path, a->path, sizeof(q->path));
        memcpy(q->body, a->body, sizeof(q->body));
        return;
    }
    int r = rnd(100), p = -1;
    if (r < 36)
        p = pick_pay(can_capture);
    if (p >= 0) {
        struct pay *pp = &book.pays[p];
        bool do_void = r >= 27;
        q->kind = do_void ? K_VOID : K_CAPTURE;
        q->pay = p;
        new_key(q, do_void ? "v" : "c");
        snprintf(q->path, sizeof(q->path), "/v1/payments/%s/%s", pp->id,
                 do_void ? "void" : "capture");
        if (!do_void) {
            q->amount = rnd(2) ? pp->amount : pp->amount / 2 + 1;
            snprintf(q->body, sizeof(q->body), "{\"amount\":%lld}", q->amount);
        }
        pp->busy = true;
        return;
    }
    if (r >= 36 && r < 54)
        p = pick_pay(can_refund);
    if (p >= 0) {
        struct pay *pp = &book.pays[p];
        long long left = pp->captured - pp->refunded;
        q->kind = K_REFUND;
        q->pay = p;
        q->amount = rnd(2) || left < 2 ? left : left / 2;
        new_key(q, "r");
        snprintf(q->path, sizeof(q->path), "/v1/payments/%s/refund", pp->id);
        snprintf(q->body, sizeof(q->body), "{\"amount\":%lld}", q->amount);
        pp->busy = true;
        return;
    }
    q->kind = K_AUTH;
    q->amount = 100 + rnd(100000);
    new_key(q, "a");
    snprintf(q->path, sizeof(q->path), "/v1/payments/authorize");
    snprintf(q->body, sizeof(q->body),
             "{\"merchant_id\":\"%s\",\"amount\":%lld,\"currency\":\"KRW\"}",
             merchants[rnd(MERCHANTS)], q->amount);
}

/* Between cycles (nothing in flight refers to an index): forgets the older half of the
 * answers and payments when the book is half full, so memory stays bounded however
 * many cuts run. */
static void book_trim(void)
{
    if (book.nacks > ACKS_MAX / 2) {
        int drop = book.nacks / 2;
        for (int i = 0; i < drop; i++)
            free(book.acks[i].answer);
        memmove(book.acks, book.acks + drop, (size_t)(book.nacks - drop) * sizeof(*book.acks));
        book.nacks -= drop;
    }
    if (book.npays > PAYS_MAX / 2) {
        int drop = book.npays / 2;
        memmove(book.pays, book.pays + drop, (size_t)(book.npays - drop) * sizeof(*book.pays));
        book.npays -= drop;
    }
}

static void add_ack(const struct req *q, int status, const char *body, size_t len, int cycle)
{
    if (book.nacks == ACKS_MAX)
        return; /* one cycle never answers ACKS_MAX / 2 requests (book_trim) */
    struct ack *a = &book.acks[book.nacks];
    memcpy(a->key, q->key, sizeof(a->key));
    memcpy(a->path, q->path, sizeof(a->path));
    memcpy(a->body, q->body, sizeof(a->body));
    a->status = status;
    a->answer = malloc(len + 1);
    assert_non_null(a->answer);
    memcpy(a->answer, body, len);
    a->answer[len] = '\0';
    a->answer_len = len;
    a->cycle = cycle;
    book.nacks++;
}

/* One answer to q: record it (2xx), or compare it (a replay). */
static void on_answer(const struct req *q, int status, bool replayed, const char *body, size_t len,
                      int cycle)
{
    if (q->kind == K_REPLAY) {
        const struct ack *a = &book.acks[q->replay];
        if (status != a->status || len != a->answer_len || memcmp(body, a->answer, len) != 0 ||
            !replayed)
            set_error("replay of %s (%s): %d %.*s%s; first answer %d %s", a->key, a->path, status,
                      (int)len, body, replayed ? "" : " (not marked replayed)", a->status,
                      a->answer);
        return;
    }
    static const int want[] = {[K_AUTH] = 201, [K_CAPTURE] = 200, [K_VOID] = 200, [K_REFUND] = 201};
    if (status != want[q->kind]) {
        set_error("%s key %s: %d %.*s", q->path, q->key, status, (int)len, body);
        return;
    }
    struct pay *p = q->kind == K_AUTH ? &book.pays[book.npays] : &book.pays[q->pay];
    if (q->kind == K_AUTH) {
        if (book.npays == PAYS_MAX)
            return;
        memset(p, 0, sizeof(*p));
        char text[ENGINE_ANSWER_MAX_BYTES];
        snprintf(text, sizeof(text), "%.*s", (int)len, body);
        if (!pc_body_str(text, "id", p->id, sizeof(p->id))) {
            set_error("authorize answer without id: %s", text);
            return;
        }
        p->amount = q->amount;
        p->state = ST_AUTHORIZED;
        book.npays++;
    } else if (q->kind == K_CAPTURE) {
        p->state = ST_CAPTURED;
        p->captured = q->amount;
    } else if (q->kind == K_VOID) {
        p->state = ST_VOIDED;
    } else {
        p->refunded += q->amount;
        p->state = p->refunded == p->captured ? ST_REFUNDED : ST_PART_REFUNDED;
    }
    p->busy = false;
    p->cycle = cycle;
    add_ack(q, status, body, len, cycle);
}

/* Parses one complete response at the front of c->in; returns its size or 0. */
static size_t parse_one(struct conn *c, int *status, bool *replayed, const char **body,
                        size_t *blen)
{
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (end == NULL)
        return 0;
    size_t head = (size_t)(end - c->in) + 4;
    if (c->in_len < 12 || memcmp(c->in, "HTTP/1.1 ", 9) != 0) {
        set_error("not an HTTP response: %.40s", c->in);
        c->dead = true;
        return 0;
    }
    *status = atoi(c->in + 9);
    long clen = -1;
    *replayed = false;
    for (char *l = memchr(c->in, '\n', head) + 1; l < c->in + head - 2;) {
        char *nl = memchr(l, '\n', (size_t)(c->in + head - l));
        if (strncasecmp(l, "Content-Length:", 15) == 0)
            clen = atol(l + 15);
        if (strncasecmp(l, "Idempotent-Replayed: true", 25) == 0)
            *replayed = true;
        l = nl + 1;
    }
    if (clen < 0) {
        set_error("response without Content-Length");
        c->dead = true;
        return 0;
    }
    if (c->in_len < head + (size_t)clen)
        return 0;
    *body = c->in + head;
    *blen = (size_t)clen;
    return head + (size_t)clen;
}

/*
 * The body as sent: a non-empty body gets 0..PAD_MAX - 1 spaces before its closing
 * brace, as many as its key's hash says, so that every sending of one request (first,
 * replays, verification) carries the same bytes, and the write-ahead log grows fast
 * enough to go through segments (recycling) within a short run. NULL for no body.
 */
static const char *wire_body(const char *key, const char *body, char out[96 + PAD_MAX])
{
    size_t len = strlen(body);
    if (len == 0)
        return NULL;
    unsigned h = 2166136261u;
    for (const char *k = key; *k; k++)
        h = (h ^ (unsigned char)*k) * 16777619u;
    size_t pad = h % PAD_MAX;
    assert_true(len < 96 && body[len - 1] == '}');
    memcpy(out, body, len - 1);
    memset(out + len - 1, ' ', pad);
    memcpy(out + len - 1 + pad, "}", 2);
    return out;
}

static void queue_request(struct conn *c)
{
    struct req *q = &c->q[(c->qh + c->qn) % DEPTH_MAX];
    gen(q, c->replay_pct);
    char buf[96 + PAD_MAX];
    const char *body = wire_body(q->key, q->body, buf);
    int n = snprintf(c->out + c->out_len, OUT_CAP - c->out_len,
                     "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Idempotency-Key: %s\r\nContent-Length: %zu\r\n\r\n%s",
                     q->path, q->key, body ? strlen(body) : 0, body ? body : "");
    assert_true(n > 0 && (size_t)n < OUT_CAP - c->out_len);
    c->out_len += (size_t)n;
    c->qn++;
}

static void conn_read(struct conn *c, int cycle)
{
    ssize_t n = recv(c->fd, c->in + c->in_len, IN_CAP - c->in_len, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        c->dead = true;
        return;
    }
    if (n < 0)
        return;
    c->in_len += (size_t)n;
    int status;
    bool replayed;
    const char *body;
    size_t blen, used;
    while (c->qn > 0 && (used = parse_one(c, &status, &replayed, &body, &blen)) > 0) {
        on_answer(&c->q[c->qh], status, replayed, body, blen, cycle);
        c->qh = (c->qh + 1) % DEPTH_MAX;
        c->qn--;
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
    }
}

static void conn_write(struct conn *c)
{
    ssize_t n =
        send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            c->dead = true;
        return;
    }
    c->out_off += (size_t)n;
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
}

/* Whatever was in flight at the cut went unanswered: its payment's state is unknown. */
static void conn_abandon(struct conn *c)
{
    for (; c->qn > 0; c->qn--, c->qh = (c->qh + 1) % DEPTH_MAX) {
        struct req *q = &c->q[c->qh];
        if (q->kind == K_CAPTURE || q->kind == K_VOID || q->kind == K_REFUND) {
            book.pays[q->pay].uncertain = true;
            book.pays[q->pay].busy = false;
        }
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

/* One poll() turn over every connection: fill pipelines, send, read answers. Returns
 * the number of connections still alive. */
static int drive(struct conn *cs, int nconns, int depth, bool send_more, int cycle)
{
    struct pollfd pfd[CONNS_MAX];
    int alive = 0;
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &cs[i];
        while (send_more && !c->dead && c->qn < depth && !book.error[0])
            queue_request(c);
        pfd[i] = (struct pollfd){.fd = c->dead ? -1 : c->fd,
                                 .events = (short)(POLLIN | (c->out_len ? POLLOUT : 0))};
        alive += !c->dead;
    }
    if (alive == 0 || poll(pfd, (nfds_t)nconns, 20) <= 0)
        return alive;
    for (int i = 0; i < nconns; i++) {
        if (pfd[i].revents & POLLOUT)
            conn_write(&cs[i]);
        if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR))
            conn_read(&cs[i], cycle);
    }
    return alive;
}

/* While the engine runs: some shard's LMDB file has writes no fsync landed yet (in the
 * write-ahead log mode only checkpoints write it: one is between its writes and its
 * commit's sync). */
static bool in_checkpoint_hint(void)
{
    for (int shard = 0; shard < 2; shard++) {
        char path[PATH_MAX + 64];
        snprintf(path, sizeof(path), "%s/shard-%03d/data.mdb", eng.root, shard);
        if (pl_disk_dirty_hint(eng.shadow, path) == 1)
            return true;
    }
    return false;
}

/* While the engine runs: some shard's log directory has names not synced yet. */
static bool in_prepare_hint(void)
{
    for (int shard = 0; shard < 2; shard++) {
        char path[PATH_MAX + 64];
        snprintf(path, sizeof(path), "%s/shard-%03d/wal", eng.root, shard);
        if (pl_disk_names_differ(eng.shadow, path) == 1)
            return true;
    }
    return false;
}

/* After the kill, before the rebuild: where the cut fell, counted and described. */
static const char *cut_where(int aimed)
{
    bool ckpt = false, prep = false;
    for (int shard = 0; shard < 2; shard++) {
        char path[PATH_MAX + 64];
        snprintf(path, sizeof(path), "%s/shard-%03d/data.mdb", eng.root, shard);
        ckpt |= pl_disk_file_differs(eng.shadow, path) == 1;
        snprintf(path, sizeof(path), "%s/shard-%03d/wal", eng.root, shard);
        prep |= pl_disk_names_differ(eng.shadow, path) == 1;
    }
    where.ckpt_cycles += eng.ckpt;
    where.aimed += aimed != 0;
    where.in_checkpoint += ckpt;
    where.in_prepare += prep;
    return ckpt && prep ? "inside a checkpoint and a segment's preparation"
           : ckpt       ? "inside a checkpoint (LMDB writes not synced)"
           : prep       ? "inside a segment's preparation (names not synced)"
                        : "outside checkpoints";
}

/* After the rebuild: the highest segment index and the most segment files a shard's log
 * has (recycling keeps the files few while the index grows). */
static void note_segments(void)
{
    for (int shard = 0; shard < 2; shard++) {
        char path[PATH_MAX + 64];
        snprintf(path, sizeof(path), "%s/shard-%03d/wal", eng.root, shard);
        DIR *d = opendir(path);
        if (d == NULL)
            continue;
        unsigned long files = 0;
        for (struct dirent *e; (e = readdir(d)) != NULL;) {
            if (strlen(e->d_name) != 20 || strcmp(e->d_name + 16, ".log") != 0)
                continue;
            unsigned long seg = strtoul(e->d_name, NULL, 16);
            files++;
            where.seg_max = seg > where.seg_max ? seg : where.seg_max;
        }
        closedir(d);
        where.files_max = files > where.files_max ? files : where.files_max;
    }
}

/* Load on the running engine, then the cut at a random moment, then the rebuild. */
static void load_and_cut(int nconns, int depth, int cycle)
{
    static struct conn cs[CONNS_MAX];
    book_trim();
    for (int i = 0; i < nconns; i++) {
        memset(&cs[i], 0, sizeof(cs[i]));
        /* Every other of few connections, and every fourth of many, only replays: while
         * a writer waits for its answer, the replayers' batches are replays only. */
        cs[i].replay_pct = nconns <= 8 ? (i % 2 ? 100 : 0) : (i % 4 == 3 ? 100 : 34);
        cs[i].fd = rp_connect(eng.port, RP_IO_TIMEOUT_MS);
        assert_true(cs[i].fd >= 0);
    }
    int acks0 = book.nacks, sent0 = (int)book.keyseq;
    int64_t warm_end = rp_now_ms() + WARMUP_MAX_MS;
    while (book.nacks - acks0 < MIN_ACKS && rp_now_ms() < warm_end && !book.error[0])
        drive(cs, nconns, depth, true, cycle);
    int delay = rnd(CUT_WINDOW_MS);
    int64_t cut_at = rp_now_ms() + delay;
    while (rp_now_ms() < cut_at && !book.error[0])
        drive(cs, nconns, depth, true, cycle);
    /* In checkpoint cycles: 1 in 2 cuts aimed at a checkpoint, 1 in 4 at a segment's
     * preparation (a rename or a new file whose directory is not synced yet). */
    int aim = eng.ckpt ? rnd(4) : 0; /* 0: no aim, 1: preparation, 2-3: checkpoint */
    int64_t aim_end = rp_now_ms() + AIM_MAX_MS;
    while (aim && !(aim == 1 ? in_prepare_hint() : in_checkpoint_hint()) && rp_now_ms() < aim_end &&
           !book.error[0])
        drive(cs, nconns, depth, true, cycle);
    engine_kill();
    const char *fell = cut_where(aim);
    /* Answers the engine sent before it died count: they were on the wire. */
    int64_t drain_end = rp_now_ms() + DRAIN_MS;
    while (drive(cs, nconns, depth, false, cycle) > 0 && rp_now_ms() < drain_end)
        ;
    for (int i = 0; i < nconns; i++)
        conn_abandon(&cs[i]);
    if (book.error[0])
        fail_msg("cycle %d: %s", cycle, book.error);
    print_message("cut %d (%d connections x %d%s): after %d ms more, %lu new keys sent, %d "
                  "answered; %s\n",
                  cycle, nconns, depth, eng.ckpt ? ", checkpoints" : "", delay,
                  book.keyseq - (unsigned long)sent0, book.nacks - acks0, fell);
    assert_true(book.nacks - acks0 >= MIN_ACKS);
    rebuild();
    note_segments();
}

/* ---- verification after a restart ------------------------------------------------- */

static const char *state_name(enum pay_state s)
{
    static const char *const names[] = {"authorized", "voided", "captured", "partially_refunded",
                                        "refunded"};
    return names[s];
}

static int state_of(const char *status)
{
    for (int s = ST_AUTHORIZED; s <= ST_REFUNDED; s++)
        if (strcmp(status, state_name((enum pay_state)s)) == 0)
            return s;
    return -1;
}

/* The engine shows p in at least its answered state (an unanswered request may have
 * moved it further). */
static void verify_payment(struct pc_conn *pc, const struct pay *p, int cut)
{
    char path[64], status[32];
    snprintf(path, sizeof(path), "/v1/payments/%s", p->id);
    struct rp_response r;
    int err = pc_call(pc, "GET", path, NULL, NULL, &r);
    if (err)
        fail_msg("GET %s: transport error %d", path, err);
    if (r.status != 200)
        fail_msg("cut %d: answered payment %s lost: %d %s", cut, p->id, r.status, r.body);
    long long amount, captured, refunded;
    if (!pc_body_str(r.body, "status", status, sizeof(status)) ||
        !pc_body_int(r.body, "amount", &amount) ||
        !pc_body_int(r.body, "captured_amount", &captured) ||
        !pc_body_int(r.body, "refunded_amount", &refunded))
        fail_msg("GET %s: bad payment %s", path, r.body);
    int s = state_of(status);
    bool ok = s >= 0 && amount == p->amount && refunded >= p->refunded;
    if (p->state == ST_VOIDED)
        ok = ok && s == ST_VOIDED;
    else if (p->state != ST_AUTHORIZED)
        ok = ok && s >= ST_CAPTURED && captured == p->captured;
    if (!ok)
        fail_msg("cut %d: payment %s is %s; the answers said %s, amount %lld, captured %lld, "
                 "refunded %lld",
                 cut, p->id, r.body, state_name(p->state), p->amount, p->captured, p->refunded);
    rp_response_free(&r);
}

static void verify_replay(struct pc_conn *pc, const struct ack *a, int cut)
{
    struct rp_response r;
    char buf[96 + PAD_MAX];
    int err = pc_call(pc, "POST", a->path, a->key, wire_body(a->key, a->body, buf), &r);
    if (err)
        fail_msg("replay of %s: transport error %d", a->key, err);
    const char *h = rp_header(&r, "Idempotent-Replayed");
    if (r.status != a->status || r.body_len != a->answer_len ||
        memcmp(r.body, a->answer, a->answer_len) != 0 || !h || strcmp(h, "true") != 0)
        fail_msg("cut %d: answered request %s (%s) sent again: %d %s%s; first answer %d %s", cut,
                 a->key, a->path, r.status, r.body, h ? "" : " (not marked replayed)", a->status,
                 a->answer);
    rp_response_free(&r);
}

/* After the cut of cycle `cut`: check, restart, and compare with the answers. */
static void verify_after_cut(int cut)
{
    run_check("after the cut");
    engine_start();
    struct pc_conn pc;
    pc_init(&pc, eng.port);
    int checked = 0;
    for (int i = 0; i < book.npays; i++) {
        if (book.pays[i].cycle == cut || rnd(book.npays) < SAMPLE_OLD) {
            verify_payment(&pc, &book.pays[i], cut);
            checked++;
        }
    }
    for (int i = 0; i < book.nacks; i++) {
        if (book.acks[i].cycle == cut || rnd(book.nacks) < SAMPLE_OLD) {
            verify_replay(&pc, &book.acks[i], cut);
            checked++;
        }
    }
    pc_close(&pc);
    (void)checked;
}

/* ---- tests ------------------------------------------------------------------------- */

static int cuts_wanted(void)
{
    const char *env = getenv("RINGPAY_POWERLOSS_CUTS");
    int n = env ? atoi(env) : CUTS_DEFAULT;
    return n < 1 ? 1 : n > CUTS_MAX ? CUTS_MAX : n;
}

static void book_init(void)
{
    const char *env = getenv("RINGPAY_POWERLOSS_SEED");
    unsigned seed =
        env ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL) ^ (unsigned)getpid();
    memset(&book, 0, sizeof(book));
    book.seed = seed;
    book.acks = calloc(ACKS_MAX, sizeof(*book.acks));
    book.pays = calloc(PAYS_MAX, sizeof(*book.pays));
    assert_non_null(book.acks);
    assert_non_null(book.pays);
}

static void test_power_cuts(void **state)
{
    (void)state;
    book_init();
    setup_dirs();
    int cuts = cuts_wanted();
    print_message("power-loss test: %d cuts, RINGPAY_POWERLOSS_SEED=%u, fsync %ld us\n", cuts,
                  book.seed, eng.sync_us);
    int64_t t0 = rp_now_ms();
    memset(&where, 0, sizeof(where));
    eng.ckpt = true;
    engine_start();
    for (int cut = 0; cut < cuts; cut++) {
        bool many = cut % 3 == 2;
        load_and_cut(many ? 64 : 4, many ? 4 : 1, cut);
        eng.ckpt = (cut + 1) % 3 != 1; /* the next cycle's engine */
        verify_after_cut(cut);
    }
    int code = engine_stop();
    if (code != 0) {
        engine_dump_log();
        fail_msg("ringpay serve exited %d on SIGTERM after the cuts", code);
    }
    run_check("after the last restart");
    print_message("%d cuts passed in %.1f s: %d answers and %d payments, none lost\n", cuts,
                  (double)(rp_now_ms() - t0) / 1000.0, book.nacks, book.npays);
    print_message("%d cycles with constant checkpoints, %d cuts aimed; cuts inside a checkpoint: "
                  "%d, inside a segment's preparation: %d; the logs reached segment %lu with at "
                  "most %lu files\n",
                  where.ckpt_cycles, where.aimed, where.in_checkpoint, where.in_prepare,
                  where.seg_max, where.files_max);
    if (where.aimed >= 3 && where.in_checkpoint == 0)
        fail_msg("no cut fell inside a checkpoint");
}

/* Sends one POST on pc; returns its status (and keeps the answer in *r). */
static int post(struct pc_conn *pc, struct req *q, struct rp_response *r)
{
    char buf[96 + PAD_MAX];
    int err = pc_call(pc, "POST", q->path, q->key, wire_body(q->key, q->body, buf), r);
    if (err)
        fail_msg("POST %s: transport error %d", q->path, err);
    return r->status;
}

static int readyz(int port)
{
    struct rp_response r;
    if (rp_request(port, "GET", "/readyz", NULL, NULL, &r) != 0)
        return -1;
    int status = r.status;
    rp_response_free(&r);
    return status;
}

/* One failing fsync of the shard that owns merchant pl-a: its commit's answer is 503,
 * so is everything after on that shard, /readyz turns 503; nothing answered is lost. */
static void fail_round(const char *err_name, int round)
{
    struct pc_conn pc;
    pc_init(&pc, eng.port);
    struct rp_response r;
    for (int i = 0; i < 5; i++) {
        struct req q = {.kind = K_AUTH, .amount = 500 + i};
        new_key(&q, "f");
        snprintf(q.path, sizeof(q.path), "/v1/payments/authorize");
        snprintf(q.body, sizeof(q.body),
                 "{\"merchant_id\":\"pl-a\",\"amount\":%lld,\"currency\":\"KRW\"}", q.amount);
        assert_int_equal(post(&pc, &q, &r), 201);
        on_answer(&q, r.status, false, r.body, r.body_len, round);
        rp_response_free(&r);
    }
    assert_int_equal(pl_disk_fail_next(eng.shadow, err_name, 0), 0);
    struct req bad = {.kind = K_AUTH, .amount = 777};
    new_key(&bad, "x");
    snprintf(bad.path, sizeof(bad.path), "/v1/payments/authorize");
    snprintf(bad.body, sizeof(bad.body),
             "{\"merchant_id\":\"pl-a\",\"amount\":777,\"currency\":\"KRW\"}");
    assert_int_equal(post(&pc, &bad, &r), 503);
    rp_assert_error_body(&r, "overloaded");
    rp_response_free(&r);
    /* The shim's next fsync would succeed; the shard must not trust it. */
    for (int i = 0; i < 3; i++) {
        struct req q = bad;
        new_key(&q, "y");
        assert_int_equal(post(&pc, &q, &r), 503);
        rp_response_free(&r);
    }
    assert_int_equal(pc_call(&pc, "GET", "/v1/merchants/pl-a/balances", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 503);
    rp_response_free(&r);
    assert_int_equal(readyz(eng.port), 503);
    pc_close(&pc);
    engine_kill();
    rebuild();
    verify_after_cut(round);
    assert_int_equal(readyz(eng.port), 200);
    /* The failed commit left nothing: its key is new. */
    pc_init(&pc, eng.port);
    assert_int_equal(post(&pc, &bad, &r), 201);
    assert_null(rp_header(&r, "Idempotent-Replayed"));
    rp_response_free(&r);
    pc_close(&pc);
}

static void test_failing_fsync(void **state)
{
    (void)state;
    book_init();
    setup_dirs();
    engine_start();
    fail_round("EIO", 0);
    fail_round("ENOSPC", 1);
    assert_int_equal(engine_stop(), 0);
    run_check("after the failed fsyncs");
}

/* ---- replication across power cuts -------------------------------------------------- */

#define KAFKA_CUTS_DEFAULT 6
#define KAFKA_MSGS_MAX     200000
#define KAFKA_DRAIN_MS     60000

static struct kc_mock kafka;
static struct kc_msg *kmsgs;
static size_t nkmsgs;

static void kc_cleanup(void)
{
    kc_mock_stop(&kafka);
    if (kmsgs)
        kc_free(kmsgs, nkmsgs);
    free(kmsgs);
    kmsgs = NULL;
    nkmsgs = 0;
}

static int by_event(const void *a, const void *b)
{
    const struct kc_msg *x = a, *y = b;
    if (x->shard != y->shard)
        return x->shard < y->shard ? -1 : 1;
    if (x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* The payment object of an event (the last member) and its id. */
static const char *payment_of(const struct kc_msg *m, char id[32])
{
    const char *p = strstr(m->payload, "\"payment\":{\"id\":\"");
    if (p == NULL)
        return NULL;
    snprintf(id, 32, "%.*s", (int)strcspn(p + 17, "\""), p + 17);
    return p + 10;
}

struct last_event {
    char id[32];
    const struct kc_msg *m;
};

static int by_payment(const void *a, const void *b)
{
    return strcmp(((const struct last_event *)a)->id, ((const struct last_event *)b)->id);
}

/* Every payment's last event shows the payment exactly as the engine does now. */
static void kafka_check_payments(const struct kc_msg *distinct[], size_t n)
{
    struct last_event *last = calloc(n + 1, sizeof(*last));
    assert_non_null(last);
    for (size_t i = 0; i < n; i++) {
        last[i].m = distinct[i];
        assert_non_null(payment_of(distinct[i], last[i].id));
    }
    /* Sorted by id; within an id the last event is the one with the highest sequence. */
    qsort(last, n, sizeof(*last), by_payment);
    struct pc_conn pc;
    pc_init(&pc, eng.port);
    size_t checked = 0;
    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n && strcmp(last[i].id, last[i + 1].id) == 0)
            continue; /* not the payment's last event */
        const struct kc_msg *m = last[i].m;
        for (size_t j = i; j > 0 && strcmp(last[j - 1].id, last[i].id) == 0; j--)
            if (last[j - 1].m->seq > m->seq)
                m = last[j - 1].m;
        char path[64], id[32];
        snprintf(path, sizeof(path), "/v1/payments/%s", last[i].id);
        struct rp_response r;
        assert_int_equal(pc_call(&pc, "GET", path, NULL, NULL, &r), 0);
        const char *obj = payment_of(m, id);
        size_t len = strlen(obj) - 1; /* without the event's closing brace */
        if (r.status != 200 || r.body_len != len || memcmp(r.body, obj, len) != 0)
            fail_msg("payment %s: Kafka's last event %s says %.*s; the engine says %d %s",
                     last[i].id, m->event_id, (int)len, obj, r.status, r.body);
        rp_response_free(&r);
        checked++;
    }
    pc_close(&pc);
    free(last);
    print_message("  %zu payments: each one's last event equals the engine's payment\n", checked);
}

/*
 * After the cuts: every event the engine committed durably is in Kafka, per shard the
 * sequence 1..N has no hole (N = the engine's last event), every copy of an event_id
 * carries the same bytes (an event sent before its commit was durable and then lost to
 * a cut would come back under the same id with other content), and each payment's last
 * event matches the payment.
 */
static void kafka_check(void)
{
    int64_t deadline = rp_now_ms() + KAFKA_DRAIN_MS;
    while (rp_scrape(eng.port, "ringpay_replication_backlog_events", NULL) != 0) {
        assert_true(rp_now_ms() < deadline);
        rp_sleep_ms(50);
    }
    static const char *const topics[] = {"payment.authorized", "payment.captured", "payment.voided",
                                         "payment.refunded"};
    nkmsgs = 0;
    for (size_t t = 0; t < 4; t++) {
        int rc = kc_consume(kafka.bootstrap, topics[t], 60000, kmsgs, KAFKA_MSGS_MAX, &nkmsgs);
        if (rc)
            fail_msg("kcat on %s: %d", topics[t], rc);
    }
    qsort(kmsgs, nkmsgs, sizeof(*kmsgs), by_event);
    const struct kc_msg **distinct = calloc(nkmsgs + 1, sizeof(*distinct));
    assert_non_null(distinct);
    size_t n = 0, dups = 0;
    unsigned long long next[2] = {1, 1};
    for (size_t i = 0; i < nkmsgs; i++) {
        const struct kc_msg *m = &kmsgs[i];
        assert_true(m->shard < 2);
        if (n > 0 && distinct[n - 1]->shard == m->shard && distinct[n - 1]->seq == m->seq) {
            if (strcmp(distinct[n - 1]->payload, m->payload) != 0)
                fail_msg("%s has two contents:\n  %s\n  %s", m->event_id, distinct[n - 1]->payload,
                         m->payload);
            dups++;
            continue;
        }
        if (m->seq != next[m->shard])
            fail_msg("shard %u: event %llu is missing (next in Kafka: %llu)", m->shard,
                     next[m->shard], m->seq);
        next[m->shard]++;
        distinct[n++] = m;
    }
    for (unsigned sh = 0; sh < 2; sh++) {
        char label[32];
        snprintf(label, sizeof(label), "shard=\"%u\"", sh);
        const char *const labels[] = {label, NULL};
        double last = rp_scrape(eng.port, "ringpay_replication_event_seq", labels);
        if ((double)(next[sh] - 1) != last)
            fail_msg("shard %u: Kafka holds events 1..%llu, the engine committed 1..%.0f", sh,
                     next[sh] - 1, last);
    }
    print_message("  Kafka: %zu events (%zu duplicates), no hole, one content per event_id\n", n,
                  dups);
    kafka_check_payments(distinct, n);
    free(distinct);
    kc_free(kmsgs, nkmsgs);
}

/* The cuts with the engine replicating to a cluster outside its process, which
 * survives the cuts; linger.ms=0 sends each event as soon as it may leave. */
static void test_power_cuts_kafka(void **state)
{
    (void)state;
    book_init();
    setup_dirs();
    kmsgs = calloc(KAFKA_MSGS_MAX, sizeof(*kmsgs));
    assert_non_null(kmsgs);
    assert_int_equal(kc_mock_start(&kafka, RP_MOCK_KAFKA), 0);
    const char *const extra[] = {"--kafka-brokers", kafka.bootstrap, "--kafka-conf", "linger.ms=0",
                                 NULL};
    memcpy(eng.extra, extra, sizeof(extra));
    const char *env = getenv("RINGPAY_POWERLOSS_KAFKA_CUTS");
    int cuts = env ? atoi(env) : KAFKA_CUTS_DEFAULT;
    print_message("power-loss test with Kafka: %d cuts, RINGPAY_POWERLOSS_SEED=%u\n", cuts,
                  book.seed);
    /* Every other engine checkpoints all the time: the write-ahead log mode stores the
     * replicated mark and trims the outbox at checkpoints, so cuts fall among those too. */
    eng.ckpt = true;
    engine_start();
    for (int cut = 0; cut < cuts; cut++) {
        bool many = cut % 3 == 2;
        load_and_cut(many ? 64 : 4, many ? 4 : 1, cut);
        eng.ckpt = cut % 2 == 1; /* the next cycle's engine */
        verify_after_cut(cut);
    }
    kafka_check();
    assert_int_equal(engine_stop(), 0);
    run_check("after the last restart");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_power_cuts, teardown),
        cmocka_unit_test_teardown(test_failing_fsync, teardown),
        cmocka_unit_test_teardown(test_power_cuts_kafka, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
