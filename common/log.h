/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One logging facility for every process: levels, a per-component tag, key=value lines to
 * stderr. Libraries and kernels do not log; daemons and tools do.
 * Thread safe: each line is written with one write(2).
 */
#ifndef SPARDA_COMMON_LOG_H
#define SPARDA_COMMON_LOG_H

#include <stdbool.h>

enum log_level { LOG_LEVEL_DEBUG = 0, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR, LOG_LEVEL_OFF };

/* Set the global threshold (default INFO, or SPARDA_LOG_LEVEL from the environment at first use). */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parse "debug|info|warn|error|off"; returns 0 or -EINVAL. */
int log_level_parse(const char *s, enum log_level *out);
const char *log_level_name(enum log_level level);
/* Name of the process written as proc=... on each line (default: none). */
void log_set_process(const char *name);

/*
 * Write one line: "ts=... level=... proc=... comp=<tag> msg=\"...\" <kv...>".
 * fmt is a printf format for the rest of the line, conventionally "key=value key=value".
 */
void log_write(enum log_level level, const char *tag, const char *msg, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/*
 * Rate-limited variant for hot error paths: at most one line per `interval_ms` per call site
 * (`state` is a static per call site); suppressed lines are counted and reported in the next.
 */
struct log_ratelimit {
	long long last_ms;
	unsigned long suppressed;
};
void log_write_rl(struct log_ratelimit *state, int interval_ms, enum log_level level,
		  const char *tag, const char *msg, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));

#define log_debug(tag, msg, ...) log_write(LOG_LEVEL_DEBUG, tag, msg, __VA_ARGS__)
#define log_info(tag, msg, ...) log_write(LOG_LEVEL_INFO, tag, msg, __VA_ARGS__)
#define log_warn(tag, msg, ...) log_write(LOG_LEVEL_WARN, tag, msg, __VA_ARGS__)
#define log_error(tag, msg, ...) log_write(LOG_LEVEL_ERROR, tag, msg, __VA_ARGS__)

#endif
