/*  zlog — one-line, leveled log messages to stderr. See zlog.h. */
#include "zlog.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

//  -1 until first use, then the level in force.
static atomic_int s_level = -1;

int
zlog_parse_level (const char *name, zlog_level_t *level)
{
    static const char *names [] = { "debug", "info", "warn", "error" };
    for (int i = 0; i < 4; i++)
        if (strcasecmp (name, names [i]) == 0) {
            *level = (zlog_level_t) i;
            return 0;
        }
    return -1;
}

static int
s_current_level (void)
{
    int level = atomic_load (&s_level);
    if (level < 0) {
        zlog_level_t from_env = ZLOG_INFO;
        const char *text = getenv ("ZLLM_LOG_LEVEL");
        if (text)
            zlog_parse_level (text, &from_env);
        level = (int) from_env;
        atomic_store (&s_level, level);
    }
    return level;
}

void
zlog_set_level (zlog_level_t level)
{
    atomic_store (&s_level, (int) level);
}

bool
zlog_enabled (zlog_level_t level)
{
    return (int) level >= s_current_level ();
}

void
zlog_v (zlog_level_t level, const char *actor, uint64_t request_id,
        const char *format, va_list args)
{
    if (!zlog_enabled (level))
        return;
    static const char *labels [] = { "DEBUG", "INFO ", "WARN ", "ERROR" };
    struct timespec now;
    clock_gettime (CLOCK_REALTIME, &now);
    struct tm utc;
    gmtime_r (&now.tv_sec, &utc);

    char line [2048];
    int used = snprintf (line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %-10s ",
                         utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday,
                         utc.tm_hour, utc.tm_min, utc.tm_sec, now.tv_nsec / 1000000,
                         labels [level], actor? actor: "-");
    if (request_id && used < (int) sizeof line)
        used += snprintf (line + used, sizeof line - (size_t) used,
                          "req=%016" PRIx64 " ", request_id);
    if (used < (int) sizeof line)
        used += vsnprintf (line + used, sizeof line - (size_t) used, format, args);
    if (used > (int) sizeof line - 2)
        used = (int) sizeof line - 2;
    //  One line per message whatever the text holds.
    for (int i = 0; i < used; i++)
        if (line [i] == '\n' || line [i] == '\r')
            line [i] = ' ';
    line [used++] = '\n';
    //  One write so lines from different threads never interleave.
    ssize_t written = write (STDERR_FILENO, line, (size_t) used);
    (void) written;
}

void
zlog (zlog_level_t level, const char *actor, uint64_t request_id, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    zlog_v (level, actor, request_id, format, args);
    va_end (args);
}
