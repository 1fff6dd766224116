/*
 * libFuzzer target for engine/csv.c and the reconciliation line rules of engine/settle.c.
 *
 * The first input byte seeds a chunking; the rest is a CSV body. It is read whole (from
 * a malloc'd copy of exactly its length, so AddressSanitizer catches a read past it)
 * and again split into chunks of sizes drawn from the seed, and byte by byte when it is
 * short. Checked, with abort() on a violation:
 *   - every reading reports the same lines (a digest of number, reason and fields);
 *   - line numbers are 1, 2, 3, ... and there are at most (LF count + 1) lines;
 *   - a line has a reason, or 1..CSV_FIELDS_MAX fields holding at most
 *     CSV_LINE_MAX_BYTES bytes in all, none of them containing LF;
 *   - recon_header_check and recon_line_parse never crash; a parsed line has an amount
 *     in range, a valid date and currency, and a printable transaction id; otherwise a
 *     reason is given.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/csv.h"
#include "engine/settle.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

struct digest {
    uint64_t h;
    uint64_t lines;
};

static void mix(struct digest *d, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        d->h ^= b[i];
        d->h *= 0x100000001b3ULL;
    }
}

static int on_line(void *arg, const struct csv_line *l)
{
    struct digest *d = arg;
    d->lines++;
    CHECK(l->number == d->lines);
    mix(d, &l->number, sizeof(l->number));
    if (l->error) {
        mix(d, l->error, strlen(l->error));
    } else {
        size_t total = 0;
        CHECK(l->nfields >= 1 && l->nfields <= CSV_FIELDS_MAX);
        for (size_t i = 0; i < l->nfields; i++) {
            CHECK(memchr(l->fields[i].ptr, '\n', l->fields[i].len) == NULL);
            total += l->fields[i].len;
            mix(d, &l->fields[i].len, sizeof(size_t));
            mix(d, l->fields[i].ptr, l->fields[i].len);
        }
        CHECK(total <= CSV_LINE_MAX_BYTES);
    }
    struct recon_line r;
    const char *why = NULL;
    (void)recon_header_check(l);
    if (recon_line_parse(l, &r, &why) == 0) {
        CHECK(why == NULL);
        CHECK(r.amount >= AMOUNT_MIN && r.amount <= AMOUNT_MAX);
        CHECK(r.value_date >= SETTLE_DATE_MIN && r.value_date <= SETTLE_DATE_MAX);
        CHECK(r.transaction_id_len >= 1 && r.transaction_id_len <= RECON_FIELD_MAX_BYTES);
        for (int i = 0; i < 3; i++)
            CHECK(r.currency[i] >= 'A' && r.currency[i] <= 'Z');
    } else {
        CHECK(why != NULL && why[0] != '\0');
    }
    return 0;
}

static struct digest read_all(const uint8_t *data, size_t len, unsigned seed, int mode)
{
    struct csv_reader *r = malloc(sizeof(*r));
    struct digest d = {0xcbf29ce484222325ULL, 0};
    CHECK(r != NULL);
    csv_init(r);
    uint8_t *copy = malloc(len ? len : 1);
    CHECK(copy != NULL);
    memcpy(copy, data, len);
    size_t i = 0;
    while (i < len) {
        size_t k = len - i;
        if (mode == 1) {
            seed = seed * 1103515245u + 12345u;
            k = 1 + (seed >> 16) % 97;
            if (k > len - i)
                k = len - i;
        } else if (mode == 2) {
            k = 1;
        }
        CHECK(csv_feed(r, copy + i, k, on_line, &d) == 0);
        i += k;
    }
    CHECK(csv_finish(r, on_line, &d) == 0);
    CHECK(r->bytes == len);
    free(copy);
    free(r);
    return d;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    unsigned seed = data[0];
    data++;
    size--;
    size_t lf = 0;
    for (size_t i = 0; i < size; i++)
        lf += data[i] == '\n';
    struct digest whole = read_all(data, size, seed, 0);
    CHECK(whole.lines <= lf + 1);
    struct digest chunked = read_all(data, size, seed, 1);
    CHECK(chunked.h == whole.h && chunked.lines == whole.lines);
    if (size <= 512) {
        struct digest bytes = read_all(data, size, seed, 2);
        CHECK(bytes.h == whole.h && bytes.lines == whole.lines);
    }
    return 0;
}
