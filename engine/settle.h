/*
 * The back office's rules (SPEC §5), pure: business dates, engine events as settle reads
 * them, settlement batches, reconciliation of bank statement lines, and the JSON of
 * what settle shows and publishes. No files, no clocks, no global state: time is passed
 * in, the time zone is a caller's function, and storage is the caller's (struct
 * settle_ops, implemented over LMDB by store/settle_store.c). docs/backoffice.md
 * explains all of it to a finance engineer.
 *
 * ---- Dates and the business day ------------------------------------------------------
 * A date is an int32 count of days since 1970-01-01 (proleptic Gregorian), shown as
 * "YYYY-MM-DD". Supported: 1970-01-01 .. 9999-12-30 (so that the day after a date is
 * always a date).
 *
 * The business date of an instant (SPEC: the date of occurred_at in --tz shifted by
 * --cutoff HH:MM; at or after the cutoff it is that calendar day, before it the day
 * before). Precisely, with wall(u) the local date and time of instant u in the zone:
 *     start(D) = the first instant u with wall(u) >= (D, cutoff)
 *     business_date(t) = the largest D with start(D) <= t
 * For every instant whose local time exists once, this is exactly the SPEC's sentence.
 * Where the zone's rules make it ambiguous, it is the choice that keeps business dates
 * monotonic in time (decision):
 *  - a cutoff inside a spring-forward gap (e.g. 02:30 in Europe/Berlin on the last
 *    Sunday of March): the day starts at the first instant after the gap (03:00 CEST);
 *  - a cutoff inside a fall-back repeat (02:30 in Berlin on the last Sunday of October):
 *    the day starts at its first occurrence, and the repeated half hour after the
 *    clocks went back stays in the new day instead of jumping back to the old one.
 * A business day ends where the next starts; so it is 23, 24 or 25 hours long across
 * DST changes. Zones are functions from an instant to its UTC offset
 * (settle_offset_fn): UTC and fixed offsets are here; tools/settle/tz.h reads IANA zones
 * with the C library. The calendar assumes a zone changes its offset at most once in
 * any 52 hours (true of every zone in the tz database since 1970) and |offset| < 24 h.
 *
 * ---- Events ------------------------------------------------------------------------
 * settle_event_parse reads an event value as the engine renders it (engine/apply.h):
 *   {"event_id":"evt_2a_000000000000001f","type":"payment.captured",
 *    "occurred_at":"2026-11-25T10:00:00.123Z","amount":C,"released_amount":A-C,
 *    "payment":{...the payment after the change...}}
 * with "refund":{...} instead of "released_amount" for payment.refunded, and neither for
 * payment.authorized. Strict (decisions): RFC 8259 syntax with no extension, one value,
 * at most SETTLE_EVENT_MAX_BYTES, no member settle reads given twice (also when spelled
 * with escapes), strings valid UTF-8 without lone surrogates;
 * every member settle uses present with its exact type and form (ids as the engine
 * formats them, occurred_at as the engine's 24-byte RFC 3339 UTC form, amounts plain
 * integers in range, currency three upper-case letters, merchant_id per SPEC §2); the
 * members of one type absent from the others (a "refund" in a capture is poison); and
 * the amounts consistent with the payment after the change (a capture equals the
 * payment's captured_amount, the payment's status is the one the type leads to, a
 * refund's payment is the payment, occurred_at is the payment's updated_at, the event's
 * shard is the payment's). Members settle does not know are skipped (the engine may add
 * some) after their syntax was checked, nested at most SETTLE_EVENT_DEPTH_MAX deep.
 * A value that fails is a POISON event: -EINVAL and a reason for the dead letter; the
 * parser never asserts on its input. When the Kafka topic is given it must equal type.
 *
 * ---- Settlement batches -------------------------------------------------------------
 * One batch per (merchant, currency, business date). payment.captured adds its amount
 * to gross and 1 to capture_count; payment.refunded adds its amount to refunds and 1 to
 * refund_count (a refund counts on the business date of the refund, whatever the date
 * of its capture); payment.authorized and payment.voided move no money and are
 * ignored. net = gross - refunds + adjustments (negative when a day's refunds exceed
 * its captures).
 * Closing is per business date (the caller decides when: SPEC's automatic close at
 * settle_close_at(D) = end of D + grace, or a close request for D): the date is marked
 * closed and all its batches close with it. A closed batch is final.
 * An event for a closed date is LATE: it is counted once as an ADJUSTMENT (+amount for
 * a capture, -amount for a refund) of the same merchant and currency's NEXT OPEN BATCH,
 * which is (decision):
 *   1. the existing open batch of (merchant, currency) with the smallest business date
 *      after the event's own date, if there is one (e.g. yesterday's batch still in its
 *      grace period, or today's);
 *   2. otherwise the batch of (merchant, currency) for the first date, from
 *      max(event's date + 1, business date of now), that is not closed; it is created.
 * So an adjustment never lands in a closed batch, never in a batch dated before the
 * event, and lands in the batch that will be paid out next.
 * Exactly once: settle_apply_event first asks the store whether the event_id was seen;
 * a seen event changes nothing (SETTLE_DUPLICATE). The store remembers ids until their
 * business date falls behind the retention horizon, and the rules refuse events dated
 * before the horizon (they could be duplicates of forgotten ids), so an event can never
 * count twice. Given that, applying any sequence of deliveries (duplicates, any order)
 * counts each event once: in its own batch if its date was open when it was first
 * applied, else as one adjustment.
 *
 * ---- Reconciliation ------------------------------------------------------------------
 * A bank statement line is transaction_id,amount,currency,value_date (a payment id, an
 * integer amount in minor units, three upper-case letters, YYYY-MM-DD). The matching
 * index maps a payment id to what settle knows of its capture: merchant, currency, the
 * CAPTURED AMOUNT and the value date (the capture's business date). Decisions:
 *  - the captured amount is what was captured: for a partial capture of A as C, it is
 *    C (the rest was released and never moves); refunds do not change it. A statement
 *    line reports the funds of the capture; refunds are separate money movements with
 *    their own ids, counted in the settlement batches, not on the capture's line;
 *  - a line is classified, in this order: duplicate_in_file (the transaction_id already
 *    appeared on an earlier line of the file; the first occurrence is classified
 *    normally), unknown_transaction (no capture of that payment is known, including an
 *    id that is not a payment id at all), currency_mismatch (currencies differ; amounts
 *    in different currencies are not compared), amount_mismatch, else matched. The
 *    line's value_date does not change the category (SPEC lists no date category); it
 *    names the dates for missing_in_bank;
 *  - malformed: wrong field count, a transaction_id that is empty, longer than
 *    RECON_FIELD_MAX_BYTES or not printable ASCII, a bad amount (not a plain integer
 *    1..10^15: no sign, fraction, exponent, spaces or leading zero), a bad currency, a
 *    bad date, or a CSV error (engine/csv.h), each with the line number and reason;
 *  - missing_in_bank: every payment whose capture's value date is one of the file's
 *    value dates (of its well-formed lines) and that no line of the file names.
 */
#ifndef RINGPAY_ENGINE_SETTLE_H
#define RINGPAY_ENGINE_SETTLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/csv.h"
#include "engine/json.h"
#include "engine/limits.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Dates ---------------------------------------------------------------------- */

#define SETTLE_DATE_BYTES 10      /* "YYYY-MM-DD" */
#define SETTLE_DATE_MIN   0       /* 1970-01-01 */
#define SETTLE_DATE_MAX   2932895 /* 9999-12-30 */

/* Days since 1970-01-01 of a civil date (any y, m 1..12, d 1..31; not range-checked). */
int32_t settle_days_from_civil(int32_t y, unsigned m, unsigned d);
void settle_civil_from_days(int32_t days, int32_t *y, unsigned *m, unsigned *d);

/* Strict "YYYY-MM-DD" of a real date within SETTLE_DATE_MIN..MAX: 0 or -EINVAL. */
int settle_date_parse(const char *s, size_t len, int32_t *days);

/* Writes "YYYY-MM-DD" and a NUL; days within SETTLE_DATE_MIN..MAX (asserted). */
void settle_date_format(char out[SETTLE_DATE_BYTES + 1], int32_t days);

/* Strict engine timestamp "YYYY-MM-DDTHH:MM:SS.mmmZ" (JSON_TIME_BYTES) within
 * 0..TIME_MS_MAX: 0 and *ms, or -EINVAL. */
int settle_time_parse(const char *s, size_t len, int64_t *ms);

/* ---- Time zone, cutoff, grace ------------------------------------------------------ */

/* The zone: the UTC offset in seconds (local = UTC + offset) at instant utc_ms. Must be
 * defined for utc_ms within 0 - 3 days .. TIME_MS_MAX + 3 days and return
 * |offset| <= SETTLE_TZ_OFFSET_MAX_S (asserted). Returns 0, or -errno when the zone
 * cannot tell (the date computation then fails with it). */
typedef int (*settle_offset_fn)(void *arg, int64_t utc_ms, int32_t *offset_s);

/* UTC: offset 0. arg unused. */
int settle_offset_utc(void *arg, int64_t utc_ms, int32_t *offset_s);
/* A fixed offset: arg points to an int32_t of seconds. */
int settle_offset_fixed(void *arg, int64_t utc_ms, int32_t *offset_s);

/* A calendar: the zone, the cutoff and the grace, with a cache of one business day.
 * Owned by one thread (the cache is written by lookups); several may exist. */
struct settle_calendar {
    settle_offset_fn offset_fn;
    void *offset_arg;
    int32_t cutoff_min; /* minutes after local midnight, 0..1439 */
    int64_t grace_ms;   /* 0..SETTLE_GRACE_MAX_MS */
    /* cache: business day cache_date spans [cache_start_ms, cache_end_ms) */
    bool cached;
    int32_t cache_date;
    int64_t cache_start_ms, cache_end_ms;
};

/* Arguments asserted in range. */
void settle_calendar_init(struct settle_calendar *c, settle_offset_fn fn, void *arg,
                          int32_t cutoff_min, int64_t grace_ms);

/* --cutoff "HH:MM" (00:00..23:59, two digits each): 0 and minutes, or -EINVAL. */
int settle_cutoff_parse(const char *s, size_t len, int32_t *minutes);

/* --grace: "0", or digits then one unit s, m or h ("90s", "10m", "2h"), at most
 * SETTLE_GRACE_MAX_MS: 0 and *ms, or -EINVAL. */
int settle_grace_parse(const char *s, size_t len, int64_t *ms);

/* start(date) as defined at the top: 0 and the instant (ms since the epoch), -ERANGE for
 * a date outside SETTLE_DATE_MIN..MAX+1, or the zone's -errno. */
int settle_day_start(struct settle_calendar *c, int32_t date, int64_t *utc_ms);

/* The business date of instant utc_ms (0..TIME_MS_MAX): 0 and *date, -ERANGE when it
 * falls outside SETTLE_DATE_MIN..MAX, or the zone's -errno. */
int settle_business_date(struct settle_calendar *c, int64_t utc_ms, int32_t *date);

/* When the batches of date close by themselves: the end of the business day plus
 * grace, i.e. day_start(date + 1) + grace_ms. */
int settle_close_at(struct settle_calendar *c, int32_t date, int64_t *utc_ms);

/* The last date whose close time is <= now_ms (every date up to it is due to close),
 * i.e. business_date(now - grace) - 1; SETTLE_DATE_MIN - 1 when none is. */
int settle_due_through(struct settle_calendar *c, int64_t now_ms, int32_t *date);

/* ---- Events -------------------------------------------------------------------------- */

enum settle_event_type {
    SETTLE_EVENT_AUTHORIZED = 1,
    SETTLE_EVENT_CAPTURED = 2,
    SETTLE_EVENT_VOIDED = 3,
    SETTLE_EVENT_REFUNDED = 4,
};

/* "payment.captured" etc. */
const char *settle_event_type_name(enum settle_event_type t);

/* An engine event as settle needs it. Strings are NUL-terminated. */
struct settle_event {
    enum settle_event_type type;
    char event_id[EVENT_ID_BYTES + 1];
    uint32_t event_shard; /* from the event id */
    uint64_t event_seq;   /* from the event id, >= 1 */
    int64_t occurred_at_ms;
    int64_t amount; /* the event's amount: captured, refunded, authorized or voided */
    char payment_id[ID_BYTES + 1];
    char refund_id[ID_BYTES + 1]; /* REFUNDED only, else "" */
    char merchant_id[MERCHANT_ID_MAX_BYTES + 1];
    uint8_t merchant_id_len;
    char currency[CURRENCY_BYTES + 1];
    int64_t payment_amount;  /* authorized amount */
    int64_t captured_amount; /* the payment's, after the change */
    int64_t refunded_amount; /* the payment's, after the change */
};

/* Parses a value (see the top). topic may be NULL (not checked). Returns 0 with *ev
 * filled, or -EINVAL with a NUL-terminated reason (a sentence, maybe naming a member). */
int settle_event_parse(const char *topic, size_t topic_len, const char *value, size_t len,
                       struct settle_event *ev, char reason[SETTLE_REASON_MAX_BYTES + 1]);

/* ---- Batches --------------------------------------------------------------------- */

/* What identifies a batch. */
struct settle_key {
    char merchant_id[MERCHANT_ID_MAX_BYTES + 1];
    uint8_t merchant_id_len;
    char currency[CURRENCY_BYTES + 1];
    int32_t date;
};

struct settle_batch {
    struct settle_key key;
    bool closed;
    int64_t gross;         /* sum of captures, 0..SETTLE_TOTAL_MAX-1 */
    int64_t refunds;       /* sum of refunds, 0..SETTLE_TOTAL_MAX-1 */
    int64_t adjustments;   /* late events, |.| < SETTLE_TOTAL_MAX */
    int64_t capture_count; /* captures in gross */
    int64_t refund_count;  /* refunds in refunds */
    int64_t adjustment_count;
    int64_t created_at_ms; /* when the first event opened it */
    int64_t closed_at_ms;  /* -1 while open */
    uint64_t seq;          /* the store's creation order (listing cursor); 0 until stored */
};

/* Fills *k; merchant and currency must be valid (asserted). */
void settle_key_set(struct settle_key *k, const char *merchant, size_t merchant_len,
                    const char *currency, int32_t date);
bool settle_key_equal(const struct settle_key *a, const struct settle_key *b);

/* "stl_YYYYMMDD_CUR_merchant" (<= SETTLE_BATCH_ID_MAX_BYTES) and a NUL; returns its
 * length. */
size_t settle_batch_id(char out[SETTLE_BATCH_ID_MAX_BYTES + 1], const struct settle_key *k);
/* Strict inverse: 0 and *k, or -EINVAL. */
int settle_batch_id_parse(const char *id, size_t len, struct settle_key *k);

/* A new open batch with zero totals. */
void settle_batch_init(struct settle_batch *b, const struct settle_key *k, int64_t now_ms);

/* gross - refunds + adjustments. */
int64_t settle_batch_net(const struct settle_batch *b);

/* Asserts every invariant: valid key, totals and counts within bounds and consistent
 * (a total is 0 exactly when its count is), closed exactly when closed_at_ms >= 0. */
void settle_batch_check(const struct settle_batch *b);

/* Whether the store's bytes hold a valid batch: the same checks as a predicate. */
bool settle_batch_valid(const struct settle_batch *b);

/* The pure arithmetic. Each returns 0, or -EOVERFLOW when a total would pass its bound
 * (nothing changed). capture/refund: ev of that type; adjust: +amount of a capture,
 * -amount of a refund. The batch must be open (asserted). */
int settle_batch_add(struct settle_batch *b, const struct settle_event *ev);
int settle_batch_adjust(struct settle_batch *b, const struct settle_event *ev);
void settle_batch_close(struct settle_batch *b, int64_t now_ms);

/* ---- Applying an event: the rules over an abstract store ---------------------------- */

/* What the matching index keeps of a capture. */
struct settle_capture {
    char payment_id[ID_BYTES + 1];
    char merchant_id[MERCHANT_ID_MAX_BYTES + 1];
    uint8_t merchant_id_len;
    char currency[CURRENCY_BYTES + 1];
    int64_t amount;     /* the captured amount */
    int32_t value_date; /* the capture's business date */
};

/*
 * The store the rules run against: one write transaction (reads see its earlier
 * writes). Each returns 0, -ENOENT where said, or another -errno (then the caller aborts
 * the transaction).
 */
struct settle_ops {
    /* 0 when the event id was applied before, -ENOENT when not. */
    int (*seen_get)(void *ctx, const struct settle_event *ev);
    /* Remembers the event id under its business date (for expiry). */
    int (*seen_put)(void *ctx, const struct settle_event *ev, int32_t date);
    /* The retention horizon: events dated before it are refused. */
    int (*horizon_get)(void *ctx, int32_t *date);
    /* 1 when the date is closed, 0 when not. */
    int (*date_closed)(void *ctx, int32_t date);
    /* 0 and *out, or -ENOENT. */
    int (*batch_get)(void *ctx, const struct settle_key *k, struct settle_batch *out);
    /* The batch of (k->merchant, k->currency) with the smallest date > k->date that is
     * open: 0 and *out, or -ENOENT. */
    int (*batch_next_open)(void *ctx, const struct settle_key *k, struct settle_batch *out);
    /* Inserts or replaces b; a new batch (seq 0) is given the next seq (written to b). */
    int (*batch_put)(void *ctx, struct settle_batch *b);
    /* Records that ev (of source_date) became adjustment `amount` of batch target. */
    int (*adjustment_put)(void *ctx, const struct settle_key *target, const struct settle_event *ev,
                          int32_t source_date, int64_t amount);
    /* Enters a capture in the matching index. */
    int (*capture_put)(void *ctx, const struct settle_capture *cap);
};

enum settle_outcome {
    SETTLE_COUNTED = 1, /* counted in its own batch */
    SETTLE_ADJUSTED,    /* late: an adjustment of the next open batch */
    SETTLE_DUPLICATE,   /* its event id was applied before: nothing changed */
    SETTLE_IGNORED,     /* authorized or voided: moves no money, nothing changed */
    SETTLE_REFUSED,     /* cannot be counted (reason): the caller dead-letters it */
};

struct settle_result {
    enum settle_outcome outcome;
    int32_t date;                             /* the event's business date (when it has one) */
    struct settle_key batch;                  /* COUNTED, ADJUSTED: the batch that changed */
    char reason[SETTLE_REASON_MAX_BYTES + 1]; /* REFUSED */
};

/*
 * Applies one parsed event at time now_ms (the consumer's clock; used only to find the
 * date from which a new adjustment batch may start). Order: business date (refused
 * when out of range), horizon (refused when before it), seen (duplicate), type
 * (authorized/voided ignored), capture -> matching index, then counted or adjusted
 * (refused when a total would overflow), then seen_put. Every check comes before the
 * first write, so a refused or duplicate event writes nothing. Returns 0 with *out, or
 * a store's -errno.
 */
int settle_apply_event(const struct settle_ops *ops, void *ctx, struct settle_calendar *cal,
                       const struct settle_event *ev, int64_t now_ms, struct settle_result *out);

/* ---- Reconciliation ---------------------------------------------------------------- */

enum recon_category {
    RECON_MATCHED = 0,
    RECON_AMOUNT_MISMATCH,
    RECON_CURRENCY_MISMATCH,
    RECON_UNKNOWN_TRANSACTION,
    RECON_DUPLICATE_IN_FILE,
    RECON_MISSING_IN_BANK,
    RECON_MALFORMED,
    RECON_CATEGORIES
};

/* "matched", "amount_mismatch", ... (SPEC names). */
const char *recon_category_name(enum recon_category c);

/* The header row must be exactly this (SPEC §5). */
#define RECON_HEADER "transaction_id,amount,currency,value_date"

/* Whether line (the file's first) is the header: 0, or -EINVAL. */
int recon_header_check(const struct csv_line *line);

struct recon_line {
    char transaction_id[RECON_FIELD_MAX_BYTES + 1];
    uint8_t transaction_id_len;
    int64_t amount;
    char currency[CURRENCY_BYTES + 1];
    int32_t value_date;
};

/* A data line's fields: 0 and *out, or -EINVAL with *reason (static text). A CSV error
 * of the line is its reason. */
int recon_line_parse(const struct csv_line *line, struct recon_line *out, const char **reason);

/* The category of a well-formed line: duplicate (an earlier line named its
 * transaction_id), cap the known capture of that payment or NULL. */
enum recon_category recon_classify(const struct recon_line *l, const struct settle_capture *cap,
                                   bool duplicate);

/* ---- Identifiers and renderers ----------------------------------------------------- */

#define RECON_FILE_ID_BYTES 20 /* "rcf_" + 16 hex digits */

void recon_file_id(char out[RECON_FILE_ID_BYTES + 1], uint64_t seq);
/* Strict inverse (seq >= 1): 0 and *seq, or -EINVAL. */
int recon_file_id_parse(const char *id, size_t len, uint64_t *seq);

enum recon_status {
    RECON_STATUS_PROCESSING = 1, /* an upload in progress */
    RECON_STATUS_DONE = 2,
    RECON_STATUS_FAILED = 3, /* the upload was cut off; its partial results stay */
};
const char *recon_status_name(enum recon_status s);

/* A file's summary. Invariant: the counts of every category but missing_in_bank add up
 * to lines (each data line has exactly one category). */
struct recon_summary {
    uint64_t seq; /* the file id's number */
    uint64_t lines;
    uint64_t counts[RECON_CATEGORIES];
    enum recon_status status;
    int64_t created_at_ms;
    uint32_t rematches; /* rematch runs so far */
};

/* One unmatched item: a line (line >= 2) or a payment missing in the bank file (line 0). */
struct recon_item {
    uint64_t item; /* the item's number in its file: its line, or after the last line */
    uint64_t line; /* 0: missing_in_bank */
    enum recon_category category;
    const char *reason; /* malformed: why; else NULL */
    /* The line's fields as given (malformed lines: whatever parsed, flags say). */
    char transaction_id[RECON_FIELD_MAX_BYTES + 1];
    uint8_t transaction_id_len;
    bool has_line_fields; /* amount, currency, value_date hold the line's values */
    int64_t amount;
    char currency[CURRENCY_BYTES + 1];
    int32_t value_date;
    /* What settle knows of the payment (amount/currency mismatch, missing_in_bank). */
    bool has_capture;
    struct settle_capture capture;
};

/* Renderers: append to w (engine/json.h), 0 or -ENOBUFS (sticky in w). */

/* The settlement object of SPEC §5. */
int settle_render_batch(struct jw *w, const struct settle_batch *b);

/* The value of a settlement.closed event: {"event_id":"evt_<batch id>","type":
 * "settlement.closed","occurred_at":<closed_at>,"settlement":{...}}. The event id is
 * a function of the batch, so every instance that closes it publishes the same id. */
int settle_render_closed_event(struct jw *w, const struct settle_batch *b);

/* One CSV row of a settlement listing (?format=csv), and its header row; each ends with
 * CRLF. Fields never need quoting (ids, dates, integers, words). Return the bytes
 * written, or 0 when cap is too small. */
#define SETTLE_CSV_HEADER                                                                          \
    "id,merchant_id,currency,business_date,status,gross,refunds,adjustments,net,"                  \
    "capture_count,refund_count,closed_at\r\n"
size_t settle_render_batch_csv(char *out, size_t cap, const struct settle_batch *b);

/* {"id":"rcf_…","lines":N,"counts":{"matched":…,…,"malformed":…},"status":"done"} */
int recon_render_summary(struct jw *w, const struct recon_summary *s);

/* The same members without the braces, for an answer that adds its own. */
void recon_summary_fields(struct jw *w, const struct recon_summary *s);

/* One item: {"item","line"|null,"category","transaction_id"|null,"amount"|null,
 * "currency"|null,"value_date"|null,"expected_amount"|null,"expected_currency"|null,
 * "expected_value_date"|null,"merchant_id"|null,"reason"|null}: the line's fields as
 * given (null for a missing payment or what a malformed line lacks), what settle knows
 * of the capture (null when it knows none), and a malformed line's reason. */
int recon_render_item(struct jw *w, const struct recon_item *it);

/* The value of a recon.unmatched event: {"event_id":"evt_<file id>_<item>_<round>",
 * "type":"recon.unmatched","occurred_at","file_id","item":{...}}; round is 0 for the
 * upload and the rematch number after it. */
int recon_render_unmatched_event(struct jw *w, uint64_t file_seq, const struct recon_item *it,
                                 uint32_t round, int64_t now_ms);

#ifdef __cplusplus
}
#endif

#endif
