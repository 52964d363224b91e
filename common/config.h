/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Table-driven configuration. A process declares one table of struct config_key describing
 * the fields of its own config struct; from that one table come the defaults, the config-file
 * parser (INI-style "key = value" lines, '#' comments, optional [section] headers that prefix
 * keys as "section.key"), environment overrides (SPARDA_<KEY> with '.' and '-' as '_', upper
 * case), command-line flags (--key=value or --key value; --help; --dump-config), validation,
 * the --help text and a dump of the effective config (itself a valid config file).
 * Precedence: defaults < file < environment < flags. Not thread safe; used at start-up.
 */
#ifndef SPARDA_COMMON_CONFIG_H
#define SPARDA_COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum config_type {
	CONFIG_TYPE_BOOL,   /* bool: true/false/1/0/yes/no/on/off */
	CONFIG_TYPE_INT,    /* int64_t within [min, max] */
	CONFIG_TYPE_UINT,   /* uint64_t within [min, max] */
	CONFIG_TYPE_SIZE,   /* uint64_t bytes; accepts K/M/G/T suffixes (binary) and plain numbers */
	CONFIG_TYPE_DOUBLE, /* double within [min, max] */
	CONFIG_TYPE_STRING, /* char[str_cap] inside the struct */
	CONFIG_TYPE_ENUM,   /* int index into enum_names (NULL-terminated) */
};

struct config_key {
	const char *name;  /* "ram-budget" or "metrics.port"; flag --name, env SPARDA_RAM_BUDGET */
	enum config_type type;
	size_t offset;     /* offsetof(struct yours, field) */
	size_t str_cap;    /* STRING: capacity of the char array including the NUL */
	const char *def;   /* default, as text (parsed by the same code as file values) */
	double min, max;   /* INT/UINT/SIZE/DOUBLE bounds (inclusive); both 0 = unbounded */
	const char *const *enum_names;
	const char *help;  /* one line */
};

struct config_table {
	const char *program;     /* for --help */
	const char *summary;     /* one line under the usage line */
	const struct config_key *keys;
	size_t n_keys;
	const char *env_prefix;  /* "SPARDA_" unless set */
};

/*
 * Fill `cfg` from the table: defaults, then the file named by --config=PATH (or the
 * `config_env` variable, e.g. SPARDA_MEMSVC_CONFIG; none = no file), then the environment,
 * then argv flags. Positional arguments (not starting with "--") are left in place and their
 * count returned through *n_positional (argv is permuted so they come first after argv[0]).
 * Returns:
 *   0            config ready
 *   1            --help or --dump-config was handled (text written to `out`); caller exits 0
 *   -EINVAL      a bad value, unknown key or flag; `err` (if non-NULL) holds a message that
 *                names the key and the source ("file /x.conf line 3: key ram-budget: ...")
 *   -ENOENT      the config file does not exist; -EIO reading it failed
 */
int config_load(const struct config_table *t, void *cfg, const char *config_env, int argc,
		char **argv, int *n_positional, FILE *out, char *err, size_t err_len);

/* Set one key from text (source names where it came from, for the error message). */
int config_set(const struct config_table *t, void *cfg, const char *key, const char *value,
	       const char *source, char *err, size_t err_len);

/* Apply only the defaults. Returns 0, or -EINVAL if a default fails validation (a bug). */
int config_defaults(const struct config_table *t, void *cfg);

/* Write the effective config as a config file, each key preceded by its help as a comment. */
void config_dump(const struct config_table *t, const void *cfg, FILE *out);

/* Write usage: every key as a flag with its type, default, env variable and help. */
void config_help(const struct config_table *t, FILE *out);

/* Parse a size with optional K/M/G/T (binary) suffix; returns 0 or -EINVAL / -ERANGE. */
int config_parse_size(const char *s, uint64_t *out);

#endif
