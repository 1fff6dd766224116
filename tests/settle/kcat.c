/*
 * kcat for settle's tests (see kcat.h).
 */
#define _GNU_SOURCE
#include "kcat.h"

#include "kafka_client.h" /* kc_run */

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int kcat_produce(const char *bootstrap, const char *topic, const char *key, const char *value)
{
    const char *const argv[] = {"kcat", "-b", bootstrap, "-P", "-t", topic, "-K", "\t", "-q", NULL};
    char *line;
    if (asprintf(&line, "%s\t%s\n", key, value) < 0)
        return -ENOMEM;
    int rc = kc_run(argv, line, 20000, NULL);
    free(line);
    return rc;
}

int kcat_consume(const char *bootstrap, const char *topic, int timeout_ms, struct kcat_msg **out,
                 size_t *n)
{
    const char *const argv[] = {"kcat", "-b",        bootstrap, "-C", "-t", topic,
                                "-o",   "beginning", "-e",      "-q", "-f", "%p\t%o\t%k\t%s\n",
                                NULL};
    char *text = NULL;
    int rc = kc_run(argv, NULL, timeout_ms, &text);
    *out = NULL;
    *n = 0;
    if (text == NULL)
        return rc ? rc : -ENOMEM;
    size_t cap = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); rc == 0 && line;
         line = strtok_r(NULL, "\n", &save)) {
        char *f[4] = {line};
        for (int k = 1; k < 4 && rc == 0; k++) {
            f[k] = strchr(f[k - 1], '\t');
            if (f[k] == NULL)
                rc = -EPROTO;
            else
                *f[k]++ = '\0';
        }
        if (rc)
            break;
        if (*n == cap) {
            cap = cap ? 2 * cap : 256;
            struct kcat_msg *m = realloc(*out, cap * sizeof(**out));
            if (m == NULL) {
                rc = -ENOMEM;
                break;
            }
            *out = m;
        }
        struct kcat_msg *m = &(*out)[(*n)++];
        m->partition = atoi(f[0]);
        m->offset = atoll(f[1]);
        snprintf(m->key, sizeof(m->key), "%s", f[2]);
        m->value = strdup(f[3]);
    }
    free(text);
    return rc;
}

void kcat_free(struct kcat_msg *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(msgs[i].value);
    free(msgs);
}

size_t kcat_distinct_event_ids(const struct kcat_msg *msgs, size_t n)
{
    size_t distinct = 0;
    for (size_t i = 0; i < n; i++) {
        const char *a = msgs[i].value ? strstr(msgs[i].value, "\"event_id\":\"") : NULL;
        if (a == NULL)
            continue;
        size_t alen = strcspn(a + 12, "\"");
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++) {
            const char *b = msgs[j].value ? strstr(msgs[j].value, "\"event_id\":\"") : NULL;
            seen = b && strcspn(b + 12, "\"") == alen && memcmp(a + 12, b + 12, alen) == 0;
        }
        distinct += !seen;
    }
    return distinct;
}
