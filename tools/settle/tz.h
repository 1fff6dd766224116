/*
 * IANA time zones for settle's --tz, read with the C library (engine/settle.h keeps the
 * rules pure and takes the zone as an offset function; this is that function).
 *
 * glibc reads the zone named by the TZ environment variable from the tz database
 * (/usr/share/zoneinfo, or $TZDIR) and localtime_r applies its rules, DST included. TZ
 * is process-wide state: settle_tz_set is called once at start-up, before any thread
 * reads a time (settle uses one zone for the whole process; its logs render UTC
 * themselves and never read TZ). Tests call it between cases.
 *
 * glibc silently falls back to UTC for a name it cannot find, so settle_tz_set checks
 * the name itself first: "UTC", or a zone file of the database (a relative path of
 * [A-Za-z0-9_+-] components, no "..", whose file starts with the TZif magic).
 */
#ifndef RINGPAY_TOOLS_SETTLE_TZ_H
#define RINGPAY_TOOLS_SETTLE_TZ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Longest zone name accepted ("America/Argentina/ComodRivadavia" has 32 bytes). */
#define SETTLE_TZ_NAME_MAX 64

/* Makes `name` the process's zone. Returns 0, or -EINVAL / -ENOENT with one line in
 * why (no newline): a malformed name, or no such zone in the tz database. */
int settle_tz_set(const char *name, char *why, size_t why_bytes);

/* settle_offset_fn (engine/settle.h) of the process's zone: the UTC offset in seconds
 * at utc_ms, DST included. arg unused. 0, or -ERANGE when the C library cannot place
 * the instant. */
int settle_tz_offset(void *arg, int64_t utc_ms, int32_t *offset_s);

#ifdef __cplusplus
}
#endif

#endif
