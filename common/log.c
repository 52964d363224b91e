/* SPDX-License-Identifier: Apache-2.0 */
/* Logging: one formatted line per call, written atomically to stderr. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static _Atomic int g_level = -1;
static const char *g_proc;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

const char *log_level_name(enum log_level level)
{
	if ((unsigned)level > LOG_LEVEL_OFF)
		return "?";
	return level_names[level];
}

int log_level_parse(const char *s, enum log_level *out)
{
	for (int i = 0; i <= LOG_LEVEL_OFF; i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

enum log_level log_get_level(void)
{
	int l = atomic_load_explicit(&g_level, memory_order_relaxed);
	if (l < 0) {
		enum log_level parsed = LOG_LEVEL_INFO;
		const char *env = getenv("SPARDA_LOG_LEVEL");
		if (env)
			(void)log_level_parse(env, &parsed);
		l = (int)parsed;
		atomic_store_explicit(&g_level, l, memory_order_relaxed);
	}
	return (enum log_level)l;
}

void log_set_level(enum log_level level)
{
	atomic_store_explicit(&g_level, (int)level, memory_order_relaxed);
}

void log_set_process(const char *name)
{
	g_proc = name;
}

/*
 * Append msg escaped (\" \\ \n; other control bytes as '?') and the closing quote, so one
 * call is always one parseable line. Returns the new length (at most cap).
 */
static size_t put_quoted(char *line, size_t n, size_t cap, const char *msg)
{
	for (const char *p = msg; *p && n + 3 < cap; p++) {
		unsigned char c = (unsigned char)*p;

		if (c == '"' || c == '\\') {
			line[n++] = '\\';
			line[n++] = (char)c;
		} else if (c == '\n') {
			line[n++] = '\\';
			line[n++] = 'n';
		} else {
			line[n++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
		}
	}
	if (n < cap)
		line[n++] = '"';
	line[n] = '\0';
	return n;
}

static void log_vwrite(enum log_level level, const char *tag, const char *msg,
		       unsigned long suppressed, const char *fmt, va_list ap)
{
	char line[1024];
	struct timespec ts;
	struct tm tm;
	size_t n;
	int r;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	r = snprintf(line, sizeof(line),
		     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s%s%s comp=%s msg=\"",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		     ts.tv_nsec / 1000000, log_level_name(level), g_proc ? " proc=" : "",
		     g_proc ? g_proc : "", tag ? tag : "-");
	n = r < 0 ? 0 : ((size_t)r < sizeof(line) ? (size_t)r : sizeof(line) - 1);
	n = put_quoted(line, n, sizeof(line) - 1, msg ? msg : "");
	if (fmt && fmt[0] && n < sizeof(line) - 2) {
		size_t kv = n;
		line[n++] = ' ';
		r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
		if (r > 0)
			n += (size_t)r < sizeof(line) - n ? (size_t)r : sizeof(line) - n - 1;
		/* A value with a newline (a path, a peer's text) must not split the line. */
		for (size_t i = kv; i < n; i++)
			if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
				line[i] = '?';
	}
	if (suppressed && n < sizeof(line) - 2) {
		r = snprintf(line + n, sizeof(line) - n, " suppressed=%lu", suppressed);
		if (r > 0)
			n += (size_t)r < sizeof(line) - n ? (size_t)r : sizeof(line) - n - 1;
	}
	if (n >= sizeof(line) - 1)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
}

void log_write(enum log_level level, const char *tag, const char *msg, const char *fmt, ...)
{
	va_list ap;

	if (level < log_get_level())
		return;
	va_start(ap, fmt);
	log_vwrite(level, tag, msg, 0, fmt, ap);
	va_end(ap);
}

void log_write_rl(struct log_ratelimit *state, int interval_ms, enum log_level level,
		  const char *tag, const char *msg, const char *fmt, ...)
{
	struct timespec ts;
	long long now;
	va_list ap;

	if (level < log_get_level())
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	if (state->last_ms && now - state->last_ms < interval_ms) {
		state->suppressed++;
		return;
	}
	state->last_ms = now;
	va_start(ap, fmt);
	log_vwrite(level, tag, msg, state->suppressed, fmt, ap);
	va_end(ap);
	state->suppressed = 0;
}
