/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Table-driven configuration: one table gives defaults, the INI-style file parser, environment
 * overrides, flags, validation, --help and --dump-config. Every value, whatever its source, goes
 * through config_set so a bad one is refused with the same message shape naming key and source.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONFIG_NAME_MAX 128
#define CONFIG_SOURCE_MAX 320

static void set_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t err_len, const char *fmt, ...)
{
	va_list ap;

	if (!err || !err_len)
		return;
	va_start(ap, fmt);
	vsnprintf(err, err_len, fmt, ap);
	va_end(ap);
}

static const char *env_prefix(const struct config_table *t)
{
	return t->env_prefix ? t->env_prefix : "SPARDA_";
}

/* SPARDA_METRICS_PORT for "metrics.port": prefix, then upper case with '.' and '-' as '_'. */
static void env_name(const struct config_table *t, const struct config_key *k, char *buf,
		     size_t cap)
{
	size_t n = (size_t)snprintf(buf, cap, "%s", env_prefix(t));

	for (const char *p = k->name; *p && n + 1 < cap; p++, n++)
		buf[n] = (*p == '.' || *p == '-') ? '_' : (char)toupper((unsigned char)*p);
	if (n < cap)
		buf[n] = '\0';
}

static const struct config_key *find_key(const struct config_table *t, const char *name, size_t len)
{
	for (size_t i = 0; i < t->n_keys; i++) {
		const char *kn = t->keys[i].name;
		if (strlen(kn) == len && memcmp(kn, name, len) == 0)
			return &t->keys[i];
	}
	return NULL;
}

int config_parse_size(const char *s, uint64_t *out)
{
	const char *p = s;
	char *end;
	unsigned shift = 0;
	unsigned long long v;

	while (isspace((unsigned char)*p))
		p++;
	if (!isdigit((unsigned char)*p))
		return -EINVAL;
	errno = 0;
	v = strtoull(p, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	switch (toupper((unsigned char)*end)) {
	case 'K':
		shift = 10;
		end++;
		break;
	case 'M':
		shift = 20;
		end++;
		break;
	case 'G':
		shift = 30;
		end++;
		break;
	case 'T':
		shift = 40;
		end++;
		break;
	default:
		break;
	}
	/* Accept "4G", "4GB", "4GiB" and "4096B"; nothing else may follow. */
	if (shift && (*end == 'i' || *end == 'I') && toupper((unsigned char)end[1]) == 'B')
		end += 2;
	else if (toupper((unsigned char)*end) == 'B')
		end++;
	while (isspace((unsigned char)*end))
		end++;
	if (*end)
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}

static int parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"true", "1", "yes", "on"};
	static const char *const no[] = {"false", "0", "no", "off"};

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

static bool bounded(const struct config_key *k)
{
	return k->min != 0 || k->max != 0;
}

/* Bounds check shared by the numeric types; writes the message on failure. */
static int check_bounds(const struct config_key *k, double v, const char *text, const char *source,
			char *err, size_t err_len)
{
	if (!bounded(k) || (v >= k->min && v <= k->max))
		return 0;
	set_err(err, err_len, "%s: key %s: value '%s' out of range [%.15g, %.15g]", source, k->name,
		text, k->min, k->max);
	return -EINVAL;
}

static int parse_enum(const struct config_key *k, const char *s, int *out)
{
	for (int i = 0; k->enum_names && k->enum_names[i]; i++) {
		if (strcmp(k->enum_names[i], s) == 0) {
			*out = i;
			return 0;
		}
	}
	return -EINVAL;
}

static void enum_list(const struct config_key *k, char *buf, size_t cap)
{
	size_t n = 0;

	buf[0] = '\0';
	for (int i = 0; k->enum_names && k->enum_names[i] && n < cap; i++)
		n += (size_t)snprintf(buf + n, cap - n, "%s%s", i ? "|" : "", k->enum_names[i]);
}

static int set_number(const struct config_key *k, void *field, const char *value,
		      const char *source, char *err, size_t err_len)
{
	char *end = NULL;
	const char *what = NULL;
	int ret;

	errno = 0;
	switch (k->type) {
	case CONFIG_TYPE_INT: {
		long long v = strtoll(value, &end, 10);
		if (end == value || *end || errno) {
			what = "an integer";
			break;
		}
		ret = check_bounds(k, (double)v, value, source, err, err_len);
		if (!ret)
			*(int64_t *)field = v;
		return ret;
	}
	case CONFIG_TYPE_UINT: {
		const char *p = value;
		while (isspace((unsigned char)*p))
			p++;
		unsigned long long v = *p == '-' ? 0 : strtoull(p, &end, 10);
		if (*p == '-' || end == p || *end || errno) {
			what = "an unsigned integer";
			break;
		}
		ret = check_bounds(k, (double)v, value, source, err, err_len);
		if (!ret)
			*(uint64_t *)field = v;
		return ret;
	}
	case CONFIG_TYPE_SIZE: {
		uint64_t v;
		if (config_parse_size(value, &v)) {
			what = "a size (a number with an optional K/M/G/T suffix)";
			break;
		}
		ret = check_bounds(k, (double)v, value, source, err, err_len);
		if (!ret)
			*(uint64_t *)field = v;
		return ret;
	}
	case CONFIG_TYPE_DOUBLE: {
		double v = strtod(value, &end);
		if (end == value || *end || errno || !isfinite(v)) {
			what = "a finite number";
			break;
		}
		ret = check_bounds(k, v, value, source, err, err_len);
		if (!ret)
			*(double *)field = v;
		return ret;
	}
	default:
		what = "?";
		break;
	}
	set_err(err, err_len, "%s: key %s: value '%s' is not %s", source, k->name, value, what);
	return -EINVAL;
}

static int set_key(const struct config_key *k, void *cfg, const char *value, const char *source,
		   char *err, size_t err_len)
{
	void *field = (char *)cfg + k->offset;
	char names[256];

	switch (k->type) {
	case CONFIG_TYPE_BOOL:
		if (parse_bool(value, (bool *)field) == 0)
			return 0;
		set_err(err, err_len, "%s: key %s: value '%s' is not a bool (true/false)", source,
			k->name, value);
		return -EINVAL;
	case CONFIG_TYPE_STRING:
		if (strlen(value) < k->str_cap) {
			memcpy(field, value, strlen(value) + 1);
			return 0;
		}
		set_err(err, err_len, "%s: key %s: value is %zu bytes, longer than the limit %zu",
			source, k->name, strlen(value), k->str_cap ? k->str_cap - 1 : 0);
		return -EINVAL;
	case CONFIG_TYPE_ENUM:
		if (parse_enum(k, value, (int *)field) == 0)
			return 0;
		enum_list(k, names, sizeof(names));
		set_err(err, err_len, "%s: key %s: value '%s' is not one of %s", source, k->name,
			value, names);
		return -EINVAL;
	default:
		return set_number(k, field, value, source, err, err_len);
	}
}

int config_set(const struct config_table *t, void *cfg, const char *key, const char *value,
	       const char *source, char *err, size_t err_len)
{
	const struct config_key *k = find_key(t, key, strlen(key));

	if (!source)
		source = "config";
	if (!k) {
		set_err(err, err_len, "%s: unknown key %s", source, key);
		return -EINVAL;
	}
	return set_key(k, cfg, value, source, err, err_len);
}

/* A key without a default starts at zero ("" for strings, the first name for enums). */
static void zero_field(const struct config_key *k, void *field)
{
	switch (k->type) {
	case CONFIG_TYPE_BOOL:
		*(bool *)field = false;
		break;
	case CONFIG_TYPE_INT:
		*(int64_t *)field = 0;
		break;
	case CONFIG_TYPE_UINT: /* fall through */
	case CONFIG_TYPE_SIZE:
		*(uint64_t *)field = 0;
		break;
	case CONFIG_TYPE_DOUBLE:
		*(double *)field = 0.0;
		break;
	case CONFIG_TYPE_STRING:
		if (k->str_cap)
			*(char *)field = '\0';
		break;
	case CONFIG_TYPE_ENUM:
		*(int *)field = 0;
		break;
	}
}

int config_defaults(const struct config_table *t, void *cfg)
{
	for (size_t i = 0; i < t->n_keys; i++) {
		const struct config_key *k = &t->keys[i];
		int ret;

		if (!k->def) {
			zero_field(k, (char *)cfg + k->offset);
			continue;
		}
		/* A default that fails its own validation is a bug in the table. */
		ret = set_key(k, cfg, k->def, "default", NULL, 0);
		if (ret)
			return ret;
	}
	return 0;
}

/* ---- file ------------------------------------------------------------------------------- */

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/*
 * Value text after '=': a double-quoted string (escapes \\ \" \n \t; only a comment may follow)
 * or bare text up to a '#' that follows whitespace. Rewrites in place; NULL when malformed.
 */
static char *file_value(char *v)
{
	char *r, *w;

	v = trim(v);
	if (*v != '"') {
		for (char *p = v; *p; p++) {
			if (*p == '#' && (p == v || isspace((unsigned char)p[-1]))) {
				*p = '\0';
				break;
			}
		}
		return trim(v);
	}
	for (r = v + 1, w = v; *r && *r != '"'; r++) {
		if (*r == '\\') {
			r++;
			if (*r == 'n')
				*w++ = '\n';
			else if (*r == 't')
				*w++ = '\t';
			else if (*r == '\\' || *r == '"')
				*w++ = *r;
			else
				return NULL;
		} else {
			*w++ = *r;
		}
	}
	if (*r != '"')
		return NULL;
	r = trim(r + 1);
	if (*r && *r != '#')
		return NULL;
	*w = '\0';
	return v;
}

static bool name_ok(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' && *s != '.')
			return false;
	return true;
}

static int file_line(const struct config_table *t, void *cfg, char *line, char *section,
		     const char *source, char *err, size_t err_len)
{
	char key[CONFIG_NAME_MAX];
	char *s = trim(line), *eq, *value;

	if (!*s || *s == '#' || *s == ';')
		return 0;
	if (*s == '[') {
		char *e = strchr(s, ']');
		if (!e || *trim(e + 1)) {
			set_err(err, err_len, "%s: malformed section header", source);
			return -EINVAL;
		}
		*e = '\0';
		s = trim(s + 1);
		if (*s && (!name_ok(s) || strlen(s) >= CONFIG_NAME_MAX / 2)) {
			set_err(err, err_len, "%s: bad section name '%s'", source, s);
			return -EINVAL;
		}
		strcpy(section, s);
		return 0;
	}
	eq = strchr(s, '=');
	if (!eq) {
		set_err(err, err_len, "%s: expected 'key = value'", source);
		return -EINVAL;
	}
	*eq = '\0';
	s = trim(s);
	value = file_value(eq + 1);
	if (!name_ok(s) || strlen(s) >= CONFIG_NAME_MAX / 2) {
		set_err(err, err_len, "%s: bad key name '%s'", source, s);
		return -EINVAL;
	}
	snprintf(key, sizeof(key), "%s%s%s", section, *section ? "." : "", s);
	if (!value) {
		set_err(err, err_len, "%s: key %s: malformed quoted value", source, key);
		return -EINVAL;
	}
	return config_set(t, cfg, key, value, source, err, err_len);
}

static int load_file(const struct config_table *t, void *cfg, const char *path, char *err,
		     size_t err_len)
{
	char section[CONFIG_NAME_MAX / 2] = "";
	char source[CONFIG_SOURCE_MAX];
	char *line = NULL;
	size_t cap = 0;
	unsigned lineno = 0;
	int ret = 0;
	FILE *f = fopen(path, "re");

	if (!f) {
		ret = -errno;
		set_err(err, err_len, "config file %s: %s", path, strerror(-ret));
		return ret == -ENOENT ? -ENOENT : -EIO;
	}
	for (;;) {
		errno = 0;
		ssize_t n = getline(&line, &cap, f);
		if (n < 0) {
			if (ferror(f)) {
				set_err(err, err_len, "config file %s: read failed: %s", path,
					strerror(errno ? errno : EIO));
				ret = -EIO;
			}
			break;
		}
		lineno++;
		if (memchr(line, '\0', (size_t)n)) {
			set_err(err, err_len, "file %s line %u: NUL byte", path, lineno);
			ret = -EINVAL;
			break;
		}
		snprintf(source, sizeof(source), "file %s line %u", path, lineno);
		ret = file_line(t, cfg, line, section, source, err, err_len);
		if (ret)
			break;
	}
	free(line);
	fclose(f);
	return ret;
}

static void help_write(const struct config_table *t, const char *config_env, FILE *out);

/* ---- environment and flags ---------------------------------------------------------------- */

static int load_env(const struct config_table *t, void *cfg, char *err, size_t err_len)
{
	char name[CONFIG_NAME_MAX + 32];
	char source[CONFIG_NAME_MAX + 40];

	for (size_t i = 0; i < t->n_keys; i++) {
		const struct config_key *k = &t->keys[i];
		const char *v;
		int ret;

		env_name(t, k, name, sizeof(name));
		v = getenv(name);
		if (!v)
			continue;
		snprintf(source, sizeof(source), "env %s", name);
		ret = set_key(k, cfg, v, source, err, err_len);
		if (ret)
			return ret;
	}
	return 0;
}

/* One flag found on the command line, applied after the file and the environment. */
struct config_flag {
	const struct config_key *key;
	const char *value;
	const char *arg; /* argv element naming the flag, for messages */
};

struct config_args {
	const char *path; /* --config */
	bool help, dump;
	char **pos, **rest;
	int n_pos, n_rest;
	struct config_flag *flags;
	int n_flags;
};

static bool is_builtin(const char *name, size_t len, const char *builtin)
{
	return strlen(builtin) == len && memcmp(name, builtin, len) == 0;
}

/*
 * One "--name[=value]" argument at argv[*i]. A non-bool key without '=' takes the next argument
 * as its value; a bool key alone means true and "--no-name" means false.
 */
static int parse_flag(const struct config_table *t, struct config_args *a, int argc, char **argv,
		      int *i, char *err, size_t err_len)
{
	const char *arg = argv[*i], *name = arg + 2, *eq = strchr(name, '=');
	size_t len = eq ? (size_t)(eq - name) : strlen(name);
	const char *value = eq ? eq + 1 : NULL;
	const struct config_key *k = find_key(t, name, len);
	struct config_flag *f;

	a->rest[a->n_rest++] = argv[*i];
	if (!eq && is_builtin(name, len, "help")) {
		a->help = true;
		return 0;
	}
	if (!eq && is_builtin(name, len, "dump-config")) {
		a->dump = true;
		return 0;
	}
	if (!k && !eq && len > 3 && memcmp(name, "no-", 3) == 0) {
		k = find_key(t, name + 3, len - 3);
		if (k && k->type == CONFIG_TYPE_BOOL)
			value = "false";
		else
			k = NULL;
	}
	if (!k && !is_builtin(name, len, "config")) {
		set_err(err, err_len, "flag %.*s: unknown key %.*s", (int)(len + 2), arg, (int)len,
			name);
		return -EINVAL;
	}
	if (!value && k && k->type == CONFIG_TYPE_BOOL) {
		bool b;
		/* "--verbose false" reads as written; "--verbose in.bin" leaves in.bin alone. */
		if (*i + 1 < argc && parse_bool(argv[*i + 1], &b) == 0) {
			value = argv[++*i];
			a->rest[a->n_rest++] = argv[*i];
		} else {
			value = "true";
		}
	}
	if (!value) {
		if (*i + 1 >= argc || strncmp(argv[*i + 1], "--", 2) == 0) {
			set_err(err, err_len, "flag %s: missing value", arg);
			return -EINVAL;
		}
		value = argv[++*i];
		a->rest[a->n_rest++] = argv[*i];
	}
	if (!k) {
		a->path = value;
		return 0;
	}
	f = &a->flags[a->n_flags++];
	f->key = k;
	f->value = value;
	f->arg = arg;
	return 0;
}

/* Classify argv; the first error is kept but scanning goes on so --help still wins. */
static int scan_args(const struct config_table *t, struct config_args *a, int argc, char **argv,
		     char *err, size_t err_len)
{
	int first = 0;
	bool dashdash = false;

	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		int ret = 0;

		if (dashdash || arg[0] != '-' || arg[1] == '\0') {
			a->pos[a->n_pos++] = argv[i];
			continue;
		}
		if (strcmp(arg, "--") == 0) {
			dashdash = true;
			a->rest[a->n_rest++] = argv[i];
		} else if (strcmp(arg, "-h") == 0) {
			a->help = true;
			a->rest[a->n_rest++] = argv[i];
		} else if (arg[1] != '-') {
			a->rest[a->n_rest++] = argv[i];
			if (!first)
				set_err(err, err_len, "flag %s: unknown (flags are --key=value)",
					arg);
			ret = -EINVAL;
		} else {
			ret = parse_flag(t, a, argc, argv, &i, first ? NULL : err,
					 first ? 0 : err_len);
		}
		if (ret && !first)
			first = ret;
	}
	return first;
}

static int apply_flags(void *cfg, const struct config_args *a, char *err, size_t err_len)
{
	char source[CONFIG_SOURCE_MAX];

	for (int i = 0; i < a->n_flags; i++) {
		const struct config_flag *f = &a->flags[i];
		const char *eq = strchr(f->arg, '=');
		int len = eq ? (int)(eq - f->arg) : (int)strlen(f->arg);
		int ret;

		snprintf(source, sizeof(source), "flag %.*s", len, f->arg);
		ret = set_key(f->key, cfg, f->value, source, err, err_len);
		if (ret)
			return ret;
	}
	return 0;
}

int config_load(const struct config_table *t, void *cfg, const char *config_env, int argc,
		char **argv, int *n_positional, FILE *out, char *err, size_t err_len)
{
	struct config_args a = {0};
	size_t n = argc > 0 ? (size_t)argc : 1;
	int ret, scan;

	if (n_positional)
		*n_positional = 0;
	set_err(err, err_len, "%s", "");
	ret = config_defaults(t, cfg);
	if (ret) {
		set_err(err, err_len, "default: a default value fails validation (a bug)");
		return -EINVAL;
	}
	a.pos = calloc(n, sizeof(*a.pos));
	a.rest = calloc(n, sizeof(*a.rest));
	a.flags = calloc(n, sizeof(*a.flags));
	if (!a.pos || !a.rest || !a.flags) {
		ret = -ENOMEM;
		goto out_free;
	}
	scan = scan_args(t, &a, argc, argv, err, err_len);
	/* Positionals first after argv[0], then the flags in their original order. */
	memcpy(argv + 1, a.pos, (size_t)a.n_pos * sizeof(*argv));
	memcpy(argv + 1 + a.n_pos, a.rest, (size_t)a.n_rest * sizeof(*argv));
	if (n_positional)
		*n_positional = a.n_pos;
	if (a.help) {
		help_write(t, config_env, out);
		ret = 1;
		goto out_free;
	}
	ret = scan;
	if (ret)
		goto out_free;
	if (!a.path && config_env && getenv(config_env) && *getenv(config_env))
		a.path = getenv(config_env);
	if (a.path) {
		ret = load_file(t, cfg, a.path, err, err_len);
		if (ret)
			goto out_free;
	}
	ret = load_env(t, cfg, err, err_len);
	if (!ret)
		ret = apply_flags(cfg, &a, err, err_len);
	if (!ret && a.dump) {
		config_dump(t, cfg, out);
		ret = 1;
	}
out_free:
	free(a.flags);
	free(a.rest);
	free(a.pos);
	return ret;
}

/* ---- output ----------------------------------------------------------------------------- */

/* Largest binary suffix that divides v exactly: 4294967296 -> "4G". */
static void fmt_size(uint64_t v, char *buf, size_t cap)
{
	static const char suffix[] = "KMGT";
	int s = -1;

	while (s < 3 && v && (v & 1023) == 0) {
		v >>= 10;
		s++;
	}
	if (s < 0)
		snprintf(buf, cap, "%llu", (unsigned long long)v);
	else
		snprintf(buf, cap, "%llu%c", (unsigned long long)v, suffix[s]);
}

static bool needs_quotes(const char *s)
{
	if (!*s || isspace((unsigned char)*s) || isspace((unsigned char)s[strlen(s) - 1]))
		return true;
	for (; *s; s++)
		if (*s == '#' || *s == '"' || *s == '\\' || *s == ';' || iscntrl((unsigned char)*s))
			return true;
	return false;
}

static void put_string(const char *s, FILE *out)
{
	if (!needs_quotes(s)) {
		fputs(s, out);
		return;
	}
	fputc('"', out);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(out, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", out);
		else if (*s == '\t')
			fputs("\\t", out);
		else
			fputc(*s, out);
	}
	fputc('"', out);
}

/* The shortest of %.15g / %.17g that reads back as the same double. */
static void put_double(double v, FILE *out)
{
	char buf[64];

	snprintf(buf, sizeof(buf), "%.15g", v);
	if (strtod(buf, NULL) != v)
		snprintf(buf, sizeof(buf), "%.17g", v);
	fputs(buf, out);
}

static void put_value(const struct config_key *k, const void *cfg, FILE *out)
{
	const void *field = (const char *)cfg + k->offset;
	char buf[64];
	int e;

	switch (k->type) {
	case CONFIG_TYPE_BOOL:
		fputs(*(const bool *)field ? "true" : "false", out);
		break;
	case CONFIG_TYPE_INT:
		fprintf(out, "%lld", (long long)*(const int64_t *)field);
		break;
	case CONFIG_TYPE_UINT:
		fprintf(out, "%llu", (unsigned long long)*(const uint64_t *)field);
		break;
	case CONFIG_TYPE_SIZE:
		fmt_size(*(const uint64_t *)field, buf, sizeof(buf));
		fputs(buf, out);
		break;
	case CONFIG_TYPE_DOUBLE:
		put_double(*(const double *)field, out);
		break;
	case CONFIG_TYPE_STRING:
		put_string(k->str_cap ? (const char *)field : "", out);
		break;
	case CONFIG_TYPE_ENUM:
		e = *(const int *)field;
		for (int j = 0; k->enum_names && k->enum_names[j]; j++) {
			if (j == e) {
				fputs(k->enum_names[j], out);
				break;
			}
			if (!k->enum_names[j + 1])
				fputs("?", out); /* out of range: the dump will not re-parse */
		}
		break;
	}
}

void config_dump(const struct config_table *t, const void *cfg, FILE *out)
{
	fprintf(out, "# %s configuration: the effective values (defaults < file < env < flags).\n",
		t->program ? t->program : "sparda");
	for (size_t i = 0; i < t->n_keys; i++) {
		const struct config_key *k = &t->keys[i];

		fprintf(out, "\n# %s\n%s = ", k->help ? k->help : "", k->name);
		put_value(k, cfg, out);
		fputc('\n', out);
	}
}

static const char *type_hint(const struct config_key *k, char *buf, size_t cap)
{
	switch (k->type) {
	case CONFIG_TYPE_BOOL:
		return "[=BOOL]";
	case CONFIG_TYPE_INT:
		return "=INT";
	case CONFIG_TYPE_UINT:
		return "=N";
	case CONFIG_TYPE_SIZE:
		return "=SIZE";
	case CONFIG_TYPE_DOUBLE:
		return "=NUM";
	case CONFIG_TYPE_STRING:
		return "=STR";
	case CONFIG_TYPE_ENUM:
		buf[0] = '=';
		enum_list(k, buf + 1, cap - 1);
		return buf;
	}
	return "";
}

static void put_bound(const struct config_key *k, double v, FILE *out)
{
	char buf[64];

	if (k->type == CONFIG_TYPE_SIZE && v >= 0 && v < 18446744073709551616.0) {
		fmt_size((uint64_t)v, buf, sizeof(buf));
		fputs(buf, out);
	} else {
		put_double(v, out);
	}
}

static void help_write(const struct config_table *t, const char *config_env, FILE *out)
{
	char hint[256], env[CONFIG_NAME_MAX + 32], flag[CONFIG_NAME_MAX + 300];

	fprintf(out, "Usage: %s [options]\n", t->program ? t->program : "sparda");
	if (t->summary)
		fprintf(out, "%s\n", t->summary);
	fprintf(out,
		"\nEvery option is a flag --key=value (or --key value), an environment "
		"variable %sKEY,\nor a line 'key = value' in the config file. Precedence: "
		"defaults < file < env < flags.\nSizes take K/M/G/T suffixes (binary).\n\n",
		env_prefix(t));
	fprintf(out, "  %-30s %s%s%s\n", "--config=PATH", "read a config file",
		config_env ? "; env " : "", config_env ? config_env : "");
	fprintf(out, "  %-30s %s\n", "--dump-config",
		"print the effective config as a config file and exit");
	fprintf(out, "  %-30s %s\n", "--help", "print this help and exit");
	for (size_t i = 0; i < t->n_keys; i++) {
		const struct config_key *k = &t->keys[i];

		snprintf(flag, sizeof(flag), "--%s%s", k->name, type_hint(k, hint, sizeof(hint)));
		env_name(t, k, env, sizeof(env));
		fprintf(out, "  %-30s %s\n  %-30s default: ", flag, k->help ? k->help : "", "");
		put_string(k->def ? k->def : "", out);
		fprintf(out, "; env %s", env);
		if (bounded(k) && k->type != CONFIG_TYPE_BOOL && k->type != CONFIG_TYPE_STRING &&
		    k->type != CONFIG_TYPE_ENUM) {
			fputs("; range [", out);
			put_bound(k, k->min, out);
			fputs(", ", out);
			put_bound(k, k->max, out);
			fputc(']', out);
		}
		fputc('\n', out);
	}
}

void config_help(const struct config_table *t, FILE *out)
{
	help_write(t, NULL, out);
}
