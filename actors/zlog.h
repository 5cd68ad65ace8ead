/*  zlog — one-line, leveled log messages to stderr.

    Every line has the time, the level, the actor that speaks and, when the line is about
    one request, that request's id, so that one request can be followed across actors:

        2026-11-25T11:37:00.123Z INFO  scheduler  req=cmpl-00a1b2c3d4e5f601 finished: length

    Safe to call from any thread: each line is formatted first and written with one call.
*/
#ifndef ZLLM_ZLOG_H
#define ZLLM_ZLOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum {
    ZLOG_DEBUG = 0,
    ZLOG_INFO = 1,
    ZLOG_WARN = 2,
    ZLOG_ERROR = 3
} zlog_level_t;

//  Lines below this level are not written. The default is INFO, or the value of the
//  environment variable ZLLM_LOG_LEVEL (debug, info, warn, error) when it is set.
void
    zlog_set_level (zlog_level_t level);

//  Parse "debug", "info", "warn" or "error"; returns -1 for anything else.
int
    zlog_parse_level (const char *name, zlog_level_t *level);

bool
    zlog_enabled (zlog_level_t level);

//  Write one line. request_id 0 means "not about one request".
void
    zlog (zlog_level_t level, const char *actor, uint64_t request_id, const char *format, ...)
    __attribute__ ((format (printf, 4, 5)));

void
    zlog_v (zlog_level_t level, const char *actor, uint64_t request_id,
            const char *format, va_list args);

#endif
