/*
 * `ringpay settle dlq list|replay`: settle's dead letters (SPEC §5), on the data
 * directory of a stopped settle (one process owns a directory: a running settle holds
 * its lock, and the command says so in one line).
 *
 *   list:   one JSON line per dead letter (pending ones, or --all), oldest first:
 *           {"id","status","reason","topic","partition","offset","key","created_at",
 *            "replayed_at","truncated","value_bytes","value"|"value_hex"}; the value as a
 *           string when it is UTF-8, else as hex.
 *   replay: processes dead letters again through the same rules (after a fix: a new
 *           version, a corrected --tz), given by id or all pending ones (--all); one JSON
 *           line per dead letter with its outcome. Exit 0 when every one was counted
 *           (or was a duplicate, or moves no money), 1 when some are still refused.
 * The calendar flags (--tz, --cutoff, --grace, also from RINGPAY_TZ...) must be settle's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/clock.h"
#include "engine/json.h"
#include "engine/limits.h"
#include "engine/settle.h"
#include "store/settle_store.h"
#include "tools/config.h"
#include "tools/settle/dlq.h"
#include "tools/settle/tz.h"

static const char dlq_usage[] =
    "usage: ringpay settle dlq list --data DIR [--all] [--after ID] [--limit N]\n"
    "       ringpay settle dlq replay --data DIR (--id ID | --all) [--tz Z --cutoff HH:MM "
    "--grace G]\n\n"
    "Lists or replays settle's dead letters (events it could not process). Works on the\n"
    "data directory of a stopped settle; replayed events are published when it runs again.";

enum { D_DATA, D_ALL, D_AFTER, D_LIMIT, D_ID, D_TZ, D_CUTOFF, D_GRACE, D_COUNT };

static void hex(char *out, const char *in, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[(unsigned char)in[i] >> 4];
        out[2 * i + 1] = digits[(unsigned char)in[i] & 15];
    }
}

int dlq_render(struct jw *w, const struct settle_dead_letter *d, size_t value_max, char *hexbuf)
{
    jw_obj_begin(w);
    jw_key(w, "id");
    jw_uint(w, d->id);
    jw_key(w, "status");
    jw_cstr(w, d->replayed ? "replayed" : "pending");
    jw_key(w, "reason");
    jw_str(w, d->reason, d->reason_len);
    jw_key(w, "topic");
    jw_str(w, d->topic, d->topic_len);
    jw_key(w, "partition");
    jw_int(w, d->partition);
    jw_key(w, "offset");
    if (d->offset == SETTLE_NO_OFFSET)
        jw_null(w);
    else
        jw_int(w, d->offset);
    jw_key(w, "key");
    if (d->key && json_utf8_valid(d->key, d->key_len, NULL))
        jw_str(w, d->key, d->key_len);
    else
        jw_null(w);
    jw_key(w, "created_at");
    jw_time(w, d->created_at_ms);
    jw_key(w, "replayed_at");
    if (d->replayed_at_ms >= 0)
        jw_time(w, d->replayed_at_ms);
    else
        jw_null(w);
    jw_key(w, "truncated");
    jw_bool(w, d->truncated);
    jw_key(w, "value_bytes");
    jw_uint(w, d->value_len);
    if (d->value == NULL || d->value_len > value_max) {
        jw_key(w, "value");
        jw_null(w);
    } else if (json_utf8_valid(d->value, d->value_len, NULL)) {
        jw_key(w, "value");
        jw_str(w, d->value, d->value_len);
    } else {
        hex(hexbuf, d->value, d->value_len);
        jw_key(w, "value_hex");
        jw_str(w, hexbuf, 2 * d->value_len);
    }
    return jw_obj_end(w);
}

static int print_letter(void *arg, const struct settle_dead_letter *d)
{
    (void)arg;
    size_t cap = 4096 + 6 * d->value_len + 6 * d->reason_len + 6 * d->key_len;
    char *buf = malloc(cap);
    char *hx = malloc(2 * d->value_len + 1);
    if (buf == NULL || hx == NULL) {
        free(buf);
        free(hx);
        return -ENOMEM;
    }
    struct jw w;
    jw_init(&w, buf, cap);
    dlq_render(&w, d, SIZE_MAX, hx);
    int rc = jw_finish(&w);
    if (rc == 0)
        printf("%.*s\n", (int)w.len, buf);
    free(buf);
    free(hx);
    return rc;
}

static int open_store(struct opt *o, struct settle_store **s)
{
    char why[512] = "";
    int rc = settle_store_open(s, o[D_DATA].str, NULL, why, sizeof(why));
    if (rc == -EBUSY)
        fprintf(stderr, "ringpay: %s (dlq commands need settle stopped)\n", why);
    else if (rc != 0)
        fprintf(stderr, "ringpay: %s\n", why);
    return rc;
}

static int dlq_list(struct opt *o)
{
    struct settle_store *s;
    if (open_store(o, &s) != 0)
        return 2;
    uint64_t after = o[D_AFTER].num, next = 0;
    uint64_t left = o[D_LIMIT].set ? o[D_LIMIT].num : UINT64_MAX;
    int rc = 0;
    do {
        uint32_t page = left < SETTLE_PAGE_MAX ? (uint32_t)left : SETTLE_PAGE_MAX;
        rc = settle_store_dlq_list(s, after, page, !o[D_ALL].set, print_letter, NULL, &next);
        left -= page;
        after = next;
    } while (rc == 0 && next != 0 && left > 0);
    settle_store_close(s);
    if (rc != 0) {
        fprintf(stderr, "ringpay: cannot list dead letters: %s\n", strerror(-rc));
        return 1;
    }
    return 0;
}

const char *dlq_outcome_name(enum settle_msg_result r)
{
    switch (r) {
    case SETTLE_MSG_COUNTED:
        return "counted";
    case SETTLE_MSG_ADJUSTED:
        return "adjusted";
    case SETTLE_MSG_DUPLICATE:
        return "duplicate";
    case SETTLE_MSG_IGNORED:
        return "ignored";
    case SETTLE_MSG_DEAD_LETTER:
        return "still_refused";
    default:
        return "stale";
    }
}

struct ids {
    uint64_t v[SETTLE_PAGE_MAX];
    size_t n;
};

static int collect(void *arg, const struct settle_dead_letter *d)
{
    struct ids *ids = arg;
    ids->v[ids->n++] = d->id;
    return 0;
}

/* Replays one: prints its outcome; 0 counted (or harmless), 1 still refused, -errno. */
static int replay_one(struct settle_store *s, struct settle_calendar *cal, uint64_t id)
{
    enum settle_msg_result res = SETTLE_MSG_DEAD_LETTER;
    int rc = settle_store_dlq_replay(s, cal, id, clock_wall_ms(), &res);
    if (rc == -ENOENT || rc == -EALREADY) {
        printf("{\"id\":%llu,\"outcome\":\"%s\"}\n", (unsigned long long)id,
               rc == -ENOENT ? "not_found" : "already_replayed");
        return 1;
    }
    if (rc != 0)
        return rc;
    printf("{\"id\":%llu,\"outcome\":\"%s\"}\n", (unsigned long long)id, dlq_outcome_name(res));
    return res == SETTLE_MSG_DEAD_LETTER ? 1 : 0;
}

static int calendar(struct opt *o, struct settle_calendar *cal)
{
    char why[256];
    int32_t cutoff;
    int64_t grace;
    if (settle_tz_set(o[D_TZ].str, why, sizeof(why)) != 0) {
        fprintf(stderr, "ringpay: %s\n", why);
        return -1;
    }
    if (settle_cutoff_parse(o[D_CUTOFF].str, strlen(o[D_CUTOFF].str), &cutoff) != 0 ||
        settle_grace_parse(o[D_GRACE].str, strlen(o[D_GRACE].str), &grace) != 0) {
        fprintf(stderr, "ringpay: --cutoff or --grace: not a valid value (see --help)\n");
        return -1;
    }
    bool utc = strcmp(o[D_TZ].str, "UTC") == 0;
    settle_calendar_init(cal, utc ? settle_offset_utc : settle_tz_offset, NULL, cutoff, grace);
    return 0;
}

static int dlq_replay(struct opt *o)
{
    if (o[D_ID].set == o[D_ALL].set) {
        fprintf(stderr, "ringpay: dlq replay needs --id ID or --all\n");
        return 2;
    }
    struct settle_calendar cal;
    if (calendar(o, &cal) != 0)
        return 2;
    struct settle_store *s;
    if (open_store(o, &s) != 0)
        return 2;
    int worst = 0;
    if (o[D_ID].set) {
        worst = replay_one(s, &cal, o[D_ID].num);
    } else {
        static struct ids ids;
        uint64_t after = 0, next = 0;
        do {
            ids.n = 0;
            int rc = settle_store_dlq_list(s, after, SETTLE_PAGE_MAX, true, collect, &ids, &next);
            if (rc != 0) {
                worst = rc;
                break;
            }
            for (size_t i = 0; i < ids.n && worst >= 0; i++) {
                int r = replay_one(s, &cal, ids.v[i]);
                worst = r < 0 ? r : (r > worst ? r : worst);
            }
            after = next;
        } while (next != 0 && worst >= 0);
    }
    settle_store_close(s);
    if (worst < 0) {
        fprintf(stderr, "ringpay: replay failed: %s\n", strerror(-worst));
        return 1;
    }
    return worst;
}

int cmd_settle_dlq(int argc, char **argv)
{
    bool list = argc >= 2 && strcmp(argv[1], "list") == 0;
    bool replay = argc >= 2 && strcmp(argv[1], "replay") == 0;
    if (!list && !replay) {
        bool help = argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0);
        if (help)
            printf("%s\n", dlq_usage);
        else
            fprintf(stderr, "ringpay: settle dlq needs a command: list or replay (see ringpay "
                            "settle dlq --help)\n");
        return help ? 0 : 2;
    }
    struct opt o[D_COUNT] = {
        [D_DATA] = {"data", OPT_STRING, "./settle-data", "settle's data directory"},
        [D_ALL] = {"all", OPT_FLAG, NULL, "list: replayed ones too; replay: every pending one"},
        [D_AFTER] = {"after", OPT_UINT, "0", "list: dead letters after this id", 0, UINT32_MAX},
        [D_LIMIT] = {"limit", OPT_UINT, NULL, "list: at most this many", 1, UINT32_MAX},
        [D_ID] = {"id", OPT_UINT, NULL, "replay: this dead letter", 1, UINT32_MAX},
        [D_TZ] = {"tz", OPT_STRING, "UTC", "settle's --tz"},
        [D_CUTOFF] = {"cutoff", OPT_STRING, "00:00", "settle's --cutoff"},
        [D_GRACE] = {"grace", OPT_STRING, "10m", "settle's --grace"},
    };
    int rc = config_parse(o, D_COUNT, argc - 1, argv + 1, dlq_usage);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    return list ? dlq_list(o) : dlq_replay(o);
}
