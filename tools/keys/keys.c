/*
 * `ringpay keys add|list|revoke`: API keys in a data directory (SPEC §1, §3). The key
 * file and its rules are store/keyfile.h; this file only reads flags and prints.
 *
 * Output, one JSON object per line on stdout:
 *   add     {"key_id":"rpk_…","merchant_id":"m-1"|null,"scope":"merchant","secret":"rps_…"}
 *           the only time a secret is ever shown;
 *   list    {"key_id":…,"merchant_id":…,"scope":…,"status":"active"|"revoked",
 *            "created_at":"2026-11-25T10:00:00.000Z"} per key, in the order added,
 *           never a secret;
 *   revoke  {"key_id":…,"status":"revoked"} (also when it already was).
 * Exit codes: 0 done; 1 refused or failed at run time (a third active key, an unknown
 * key, a corrupt key file, an I/O error), with one "ringpay: …" line on stderr; 2 bad
 * usage, with one "ringpay: …" line.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "engine/json.h"
#include "store/keyfile.h"
#include "tools/cmd.h"
#include "tools/config.h"

#define KEYS_LINE_BYTES 512

static const char keys_usage[] =
    "usage: ringpay keys add --data DIR (--merchant ID | --scope read --merchant ID |\n"
    "                                    --scope admin)\n"
    "       ringpay keys list --data DIR\n"
    "       ringpay keys revoke --data DIR KEY_ID\n\n"
    "Manages the API keys in DIR/keys (mode 0600, replaced atomically). A merchant has at\n"
    "most 2 active keys (rotate: add the new one, switch clients, revoke the old one).\n"
    "'ringpay keys <command> --help' describes a command's options.";

static const char add_usage[] =
    "usage: ringpay keys add --data DIR (--merchant ID | --scope read --merchant ID |\n"
    "                                    --scope admin)\n\n"
    "Creates a key and prints it as one JSON line:\n"
    "  {\"key_id\":\"rpk_…\",\"merchant_id\":\"m-1\",\"scope\":\"merchant\",\"secret\":\"rps_…\"}\n"
    "The secret (32 random bytes, as rps_ and 64 hex digits) is shown this once only.\n"
    "Scopes: merchant (every /v1 route of its merchant), read (its merchant's GETs),\n"
    "admin (no merchant; the back office and every GET).";

static const char list_usage[] =
    "usage: ringpay keys list --data DIR\n\n"
    "Prints one JSON line per key (key_id, merchant_id, scope, status, created_at), in the\n"
    "order they were added. Secrets are never shown.";

static const char revoke_usage[] =
    "usage: ringpay keys revoke --data DIR KEY_ID\n\n"
    "Marks the key revoked. It stays listed; it can never be made active again.";

enum { O_DATA, O_SCOPE, O_MERCHANT };

/* Writes s (at most 80 bytes of it) for a one-line message: bytes outside printable
 * ASCII as \xNN, so a value can never split the line. */
static void put_value(FILE *f, const char *s)
{
    for (size_t i = 0; s[i] && i < 80; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f)
            fputc(c, f);
        else
            fprintf(f, "\\x%02x", c);
    }
}

/* One "ringpay: what, got "value"" line on stderr. */
static void bad_value(const char *what, const char *value)
{
    fprintf(stderr, "ringpay: %s, got \"", what);
    put_value(stderr, value);
    fprintf(stderr, "\"\n");
}

static void print_line(struct jw *w)
{
    if (jw_finish(w) == 0)
        printf("%.*s\n", (int)w->len, w->buf);
}

static int cmd_add(int argc, char **argv)
{
    struct opt o[] = {
        [O_DATA] = {.name = "data", .type = OPT_STRING, .def = "./data", .help = "data directory"},
        [O_SCOPE] = {.name = "scope",
                     .type = OPT_STRING,
                     .def = "merchant",
                     .help = "merchant, read or admin"},
        [O_MERCHANT] = {.name = "merchant",
                        .type = OPT_STRING,
                        .help = "the key's merchant id (merchant and read keys)"},
    };
    int rc = config_parse(o, 3, argc, argv, add_usage);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    int scope = keyfile_scope_parse(o[O_SCOPE].str);
    const char *merchant = o[O_MERCHANT].str;
    if (scope < 0) {
        bad_value("--scope: expected merchant, read or admin", o[O_SCOPE].str);
        return 2;
    }
    if (scope == KEYFILE_SCOPE_ADMIN && merchant != NULL) {
        fprintf(stderr, "ringpay: an admin key belongs to no merchant: drop --merchant\n");
        return 2;
    }
    if (scope != KEYFILE_SCOPE_ADMIN && merchant == NULL) {
        fprintf(stderr, "ringpay: a %s key needs --merchant ID\n", o[O_SCOPE].str);
        return 2;
    }
    if (merchant != NULL && !keyfile_merchant_id_valid(merchant, strlen(merchant))) {
        bad_value("--merchant: expected 1-64 of [A-Za-z0-9_-]", merchant);
        return 2;
    }
    struct keyfile_new_key k;
    char err[512] = "";
    rc = keyfile_add(o[O_DATA].str, (enum keyfile_scope)scope, merchant, (int64_t)time(NULL), &k,
                     err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "ringpay: %s\n", err);
        return 1;
    }
    char buf[KEYS_LINE_BYTES];
    struct jw w;
    jw_init(&w, buf, sizeof(buf));
    jw_obj_begin(&w);
    jw_key(&w, "key_id");
    jw_cstr(&w, k.key_id);
    jw_key(&w, "merchant_id");
    if (k.scope == KEYFILE_SCOPE_ADMIN)
        jw_null(&w);
    else
        jw_cstr(&w, k.merchant_id);
    jw_key(&w, "scope");
    jw_cstr(&w, keyfile_scope_name(k.scope));
    jw_key(&w, "secret");
    jw_cstr(&w, k.secret);
    jw_obj_end(&w);
    print_line(&w);
    fflush(stdout);
    OPENSSL_cleanse(&k, sizeof(k));
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

static int cmd_list(int argc, char **argv)
{
    struct opt o[] = {
        [O_DATA] = {.name = "data", .type = OPT_STRING, .def = "./data", .help = "data directory"},
    };
    int rc = config_parse(o, 1, argc, argv, list_usage);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    struct keyset *set;
    char err[512] = "";
    if (keyfile_load(o[O_DATA].str, &set, err, sizeof(err)) != 0) {
        fprintf(stderr, "ringpay: %s\n", err);
        return 1;
    }
    for (size_t i = 0; i < keyfile_count(set); i++) {
        const struct keyfile_key *k = keyfile_at(set, i);
        char buf[KEYS_LINE_BYTES];
        struct jw w;
        jw_init(&w, buf, sizeof(buf));
        jw_obj_begin(&w);
        jw_key(&w, "key_id");
        jw_cstr(&w, k->key_id);
        jw_key(&w, "merchant_id");
        if (k->scope == KEYFILE_SCOPE_ADMIN)
            jw_null(&w);
        else
            jw_str(&w, k->merchant_id, k->merchant_id_len);
        jw_key(&w, "scope");
        jw_cstr(&w, keyfile_scope_name(k->scope));
        jw_key(&w, "status");
        jw_cstr(&w, keyfile_status_name(k->status));
        jw_key(&w, "created_at");
        jw_time(&w, k->created_s * 1000);
        jw_obj_end(&w);
        print_line(&w);
    }
    keyfile_free(set);
    return 0;
}

/* Takes the one positional argument (KEY_ID) out of argv; the rest are options, and
 * "--data" without '=' takes the next argument as its value. Returns the new argc, or
 * -1 after printing one line. */
static int take_positional(int argc, char **argv, const char **key_id)
{
    int out = 1;
    *key_id = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "-", 1) == 0) {
            argv[out++] = argv[i];
            if (strcmp(a, "--data") == 0 && i + 1 < argc)
                argv[out++] = argv[++i];
            continue;
        }
        if (*key_id != NULL) {
            bad_value("keys revoke takes one KEY_ID", a);
            return -1;
        }
        *key_id = a;
    }
    return out;
}

static int cmd_revoke(int argc, char **argv)
{
    struct opt o[] = {
        [O_DATA] = {.name = "data", .type = OPT_STRING, .def = "./data", .help = "data directory"},
    };
    const char *key_id;
    argc = take_positional(argc, argv, &key_id);
    if (argc < 0)
        return 2;
    int rc = config_parse(o, 1, argc, argv, revoke_usage);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    if (key_id == NULL) {
        fprintf(stderr, "ringpay: keys revoke needs a KEY_ID (see ringpay keys list)\n");
        return 2;
    }
    if (!keyfile_key_id_valid(key_id, strlen(key_id))) {
        bad_value("KEY_ID is not a key id (rpk_ and 16 hex digits)", key_id);
        return 2;
    }
    bool was_active;
    char err[512] = "";
    rc = keyfile_revoke(o[O_DATA].str, key_id, &was_active, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "ringpay: %s\n", err);
        return 1;
    }
    printf("{\"key_id\":\"%s\",\"status\":\"revoked\"}\n", key_id);
    return 0;
}

int cmd_keys(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*run)(int argc, char **argv);
    } subs[] = {{"add", cmd_add}, {"list", cmd_list}, {"revoke", cmd_revoke}};
    if (argc < 2) {
        fprintf(stderr, "ringpay: keys needs a command: add, list or revoke (see ringpay keys "
                        "--help)\n");
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        printf("%s\n", keys_usage);
        return 0;
    }
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
        if (strcmp(argv[1], subs[i].name) == 0)
            return subs[i].run(argc - 1, argv + 1);
    bad_value("unknown keys command (add, list or revoke)", argv[1]);
    return 2;
}
