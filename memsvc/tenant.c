/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tenants file parsing and per-tenant limits. A line that cannot be understood refuses the
 * whole file with its line number and the key at fault: half-applied tenants would silently
 * widen access.
 */
#include "tenant.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "err.h"

#define TENANT_FILE_MAX (1u << 20)

struct tenant {
	char name[TENANT_NAME_MAX];
	uid_t uids[TENANT_MAX_UIDS];
	unsigned n_uids;
	uint64_t quota_bytes, max_sessions, max_seqs, max_inflight; /* 0 = unlimited */
	uint64_t disk_quota;					    /* 0 = unlimited */
	pthread_mutex_t lock; /* guards the limits and uids (reload) and the use counters below */
	uint64_t bytes, sessions, seqs, rejected, disk_bytes;
	bool removed; /* dropped by a reload: refuses new sessions, old ones run on */
	/* Ring entries in flight: taken and given per hot-path batch by every session's thread,
	 * so lock-free; inflight_cap mirrors max_inflight (set under the lock). */
	_Atomic uint64_t inflight, inflight_cap;
};

struct tenant_key {
	char z85[TENANT_KEY_Z85 + 1];
	struct tenant *tn;
};

struct tenant_table {
	/*
	 * Guards v, n and keys against the metrics thread while a reload (on the server thread)
	 * grows them. A tenant is never freed before the table: sessions and keys point at it.
	 */
	pthread_mutex_t lock;
	struct tenant **v; /* pointers: a tenant never moves once handed out */
	size_t n, cap;
	uint64_t reloads, reload_failures;
	struct tenant_key *keys;
	size_t n_keys, cap_keys;
};

static struct tenant *find_any(struct tenant_table *t, const char *name);

static int grow(void **v, size_t *cap, size_t need, size_t elem)
{
	size_t ncap = *cap ? *cap * 2 : 8;
	void *p;

	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	p = realloc(*v, ncap * elem);
	if (!p)
		return -ENOMEM;
	*v = p;
	*cap = ncap;
	return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	*out = strtoull(s, &end, 10);
	return (errno || *end) ? -EINVAL : 0;
}

static int parse_uids(struct tenant *tn, char *v)
{
	char *save = NULL;

	for (char *u = strtok_r(v, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
		uint64_t x;
		if (parse_u64(u, &x) || x > (uid_t)-2 || tn->n_uids >= TENANT_MAX_UIDS)
			return -EINVAL;
		tn->uids[tn->n_uids++] = (uid_t)x;
	}
	return tn->n_uids ? 0 : -EINVAL;
}

/* One "key=value" word of a tenant line. */
static int parse_attr(struct tenant *tn, char *word, bool *have_quota, const char **bad)
{
	char *eq = strchr(word, '=');
	const char *k = word;
	char *v;

	*bad = word;
	if (!eq)
		return -EINVAL;
	*eq = '\0';
	v = eq + 1;
	if (strcmp(k, "uid") == 0)
		return parse_uids(tn, v);
	if (strcmp(k, "quota") == 0) {
		*have_quota = true;
		return config_parse_size(v, &tn->quota_bytes) ? -EINVAL : 0;
	}
	if (strcmp(k, "max-sessions") == 0)
		return parse_u64(v, &tn->max_sessions);
	if (strcmp(k, "max-seqs") == 0)
		return parse_u64(v, &tn->max_seqs);
	if (strcmp(k, "max-inflight") == 0)
		return parse_u64(v, &tn->max_inflight);
	if (strcmp(k, "disk-quota") == 0)
		return config_parse_size(v, &tn->disk_quota) ? -EINVAL : 0;
	return -EINVAL;
}

static bool name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= TENANT_NAME_MAX)
		return false;
	for (; *s; s++) {
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.'))
			return false;
	}
	return true;
}

static int add_tenant(struct tenant_table *t, const struct tenant *tmpl)
{
	struct tenant *tn;

	if (grow((void **)&t->v, &t->cap, t->n + 1, sizeof(*t->v)))
		return -ENOMEM;
	tn = malloc(sizeof(*tn));
	if (!tn)
		return -ENOMEM;
	*tn = *tmpl;
	pthread_mutex_init(&tn->lock, NULL);
	atomic_init(&tn->inflight, 0);
	atomic_init(&tn->inflight_cap, tmpl->max_inflight);
	t->v[t->n++] = tn;
	return 0;
}

static int parse_line(struct tenant_table *t, char *line, const char *where, char *err,
		      size_t err_len)
{
	struct tenant tn = {0};
	bool have_quota = false;
	char *save = NULL;
	const char *bad = NULL;
	char *name = strtok_r(line, " \t\r", &save);

	if (!name)
		return 0;
	if (!name_ok(name)) {
		snprintf(err, err_len, "%s: bad tenant name '%.80s' (1-63 of [A-Za-z0-9._-])",
			 where, name);
		return -EINVAL;
	}
	if (find_any(t, name)) {
		snprintf(err, err_len, "%s: duplicate tenant '%s'", where, name);
		return -EINVAL;
	}
	snprintf(tn.name, sizeof(tn.name), "%s", name);
	for (char *w = strtok_r(NULL, " \t\r", &save); w; w = strtok_r(NULL, " \t\r", &save)) {
		char copy[128];
		snprintf(copy, sizeof(copy), "%s", w);
		if (parse_attr(&tn, w, &have_quota, &bad)) {
			snprintf(err, err_len, "%s: tenant %s: bad attribute '%.100s'", where,
				 tn.name, copy);
			return -EINVAL;
		}
	}
	if (!tn.n_uids || !have_quota) {
		snprintf(err, err_len, "%s: tenant %s: missing %s", where, tn.name,
			 tn.n_uids ? "quota=" : "uid=");
		return -EINVAL;
	}
	return add_tenant(t, &tn);
}

/*
 * Calls fn on each line of text with "source line N" as its name; stops at the first error.
 * strip_hash: everything from a '#' is a comment (not for key lines: z85 uses '#').
 */
static int for_each_line(struct tenant_table *t, const char *text, const char *source,
			 int (*fn)(struct tenant_table *, char *, const char *, char *, size_t),
			 bool strip_hash, char *err, size_t err_len)
{
	unsigned lineno = 0;
	const char *p = text;

	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		char line[512], where[320];
		char *hash;
		int r;

		lineno++;
		snprintf(where, sizeof(where), "%s line %u", source, lineno);
		if (len >= sizeof(line)) {
			snprintf(err, err_len, "%s: line too long", where);
			return -EINVAL;
		}
		memcpy(line, p, len);
		line[len] = '\0';
		/* Tenant lines have no '#'; key lines may (z85), so parse_key_line decides. */
		hash = strip_hash ? strchr(line, '#') : NULL;
		if (hash)
			*hash = '\0';
		r = fn(t, line, where, err, err_len);
		if (r)
			return r;
		p = nl ? nl + 1 : p + len;
	}
	return 0;
}

int tenant_table_parse(const char *text, const char *source, struct tenant_table **out, char *err,
		       size_t err_len)
{
	struct tenant_table *t = calloc(1, sizeof(*t));
	int r;

	*out = NULL;
	if (!t)
		return -ENOMEM;
	pthread_mutex_init(&t->lock, NULL);
	r = for_each_line(t, text, source, parse_line, true, err, err_len);
	if (r)
		goto out_free;
	if (t->n == 0) {
		snprintf(err, err_len, "%s: no tenants defined", source);
		r = -EINVAL;
		goto out_free;
	}
	*out = t;
	return 0;
out_free:
	tenant_table_free(t);
	return r;
}

static int read_file(const char *path, char **text, char *err, size_t err_len)
{
	FILE *f = fopen(path, "re");
	size_t n;
	char *buf;
	int r = 0;

	if (!f) {
		r = err_from_errno();
		snprintf(err, err_len, "file %s: %s", path, err_str(r));
		return r;
	}
	buf = malloc(TENANT_FILE_MAX + 1);
	if (!buf) {
		fclose(f);
		return -ENOMEM;
	}
	n = fread(buf, 1, TENANT_FILE_MAX + 1, f);
	if (ferror(f) || n > TENANT_FILE_MAX) {
		r = ferror(f) ? -EIO : -EFBIG;
		snprintf(err, err_len, "file %s: %s", path, err_str(r));
		free(buf);
		buf = NULL;
	} else {
		buf[n] = '\0';
	}
	fclose(f);
	*text = buf;
	return r;
}

int tenant_table_load(const char *path, uid_t self_uid, uint64_t default_quota,
		      struct tenant_table **out, char *err, size_t err_len)
{
	struct tenant_table *t;
	struct tenant tn = {.name = "default", .n_uids = 1, .quota_bytes = default_quota};
	char source[300];
	char *text = NULL;
	int r;

	if (path && path[0]) {
		r = read_file(path, &text, err, err_len);
		if (r)
			return r;
		snprintf(source, sizeof(source), "file %s", path);
		r = tenant_table_parse(text, source, out, err, err_len);
		free(text);
		return r;
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	pthread_mutex_init(&t->lock, NULL);
	tn.uids[0] = self_uid;
	if (self_uid != 0)
		tn.uids[tn.n_uids++] = 0;
	r = add_tenant(t, &tn);
	if (r) {
		tenant_table_free(t);
		return r;
	}
	*out = t;
	return 0;
}

static bool z85_ok(const char *s)
{
	static const char alphabet[] =
	    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    ".-:+=^!/*?&<>()[]{}@%$#";

	if (strlen(s) != TENANT_KEY_Z85)
		return false;
	for (; *s; s++)
		if (!strchr(alphabet, *s))
			return false;
	return true;
}

static int parse_key_line(struct tenant_table *t, char *line, const char *where, char *err,
			  size_t err_len)
{
	char *save = NULL;
	char *name = strtok_r(line, " \t\r", &save);
	char *key = name ? strtok_r(NULL, " \t\r", &save) : NULL;
	struct tenant *tn;

	char *extra = key ? strtok_r(NULL, " \t\r", &save) : NULL;

	if (!name || name[0] == '#')
		return 0; /* blank line or a comment line */
	if (!key || (extra && extra[0] != '#')) {
		snprintf(err, err_len, "%s: expected 'tenant z85-public-key'", where);
		return -EINVAL;
	}
	tn = tenant_find(t, name);
	if (!tn) {
		snprintf(err, err_len, "%s: unknown tenant '%.64s'", where, name);
		return -EINVAL;
	}
	if (!z85_ok(key)) {
		snprintf(err, err_len, "%s: tenant %s: key is not 40 z85 characters", where, name);
		return -EINVAL;
	}
	if (grow((void **)&t->keys, &t->cap_keys, t->n_keys + 1, sizeof(*t->keys)))
		return -ENOMEM;
	memcpy(t->keys[t->n_keys].z85, key, TENANT_KEY_Z85 + 1);
	t->keys[t->n_keys].tn = tn;
	t->n_keys++;
	return 0;
}

int tenant_table_parse_keys(struct tenant_table *t, const char *text, const char *source, char *err,
			    size_t err_len)
{
	return for_each_line(t, text, source, parse_key_line, false, err, err_len);
}

void tenant_table_free(struct tenant_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++) {
		if (!t->v[i])
			continue; /* moved into another table by a reload */
		pthread_mutex_destroy(&t->v[i]->lock);
		free(t->v[i]);
	}
	pthread_mutex_destroy(&t->lock);
	free(t->v);
	free(t->keys);
	free(t);
}

size_t tenant_count(struct tenant_table *t)
{
	size_t n;

	pthread_mutex_lock(&t->lock);
	n = t->n;
	pthread_mutex_unlock(&t->lock);
	return n;
}

struct tenant *tenant_at(struct tenant_table *t, size_t i)
{
	struct tenant *tn;

	pthread_mutex_lock(&t->lock);
	tn = i < t->n ? t->v[i] : NULL;
	pthread_mutex_unlock(&t->lock);
	return tn;
}

/* Any tenant of that name, removed ones included; t->lock held or the table private. */
static struct tenant *find_any(struct tenant_table *t, const char *name)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->v[i] && strcmp(t->v[i]->name, name) == 0)
			return t->v[i];
	return NULL;
}

struct tenant *tenant_find(struct tenant_table *t, const char *name)
{
	struct tenant *tn;

	pthread_mutex_lock(&t->lock);
	tn = find_any(t, name);
	if (tn && tenant_removed(tn))
		tn = NULL;
	pthread_mutex_unlock(&t->lock);
	return tn;
}

struct tenant *tenant_find_key(struct tenant_table *t, const char *z85)
{
	struct tenant *tn = NULL;

	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n_keys && !tn; i++)
		if (strcmp(t->keys[i].z85, z85) == 0)
			tn = t->keys[i].tn;
	pthread_mutex_unlock(&t->lock);
	if (tn && tenant_removed(tn))
		tn = NULL;
	return tn;
}

bool tenant_removed(struct tenant *tn)
{
	bool r;

	pthread_mutex_lock(&tn->lock);
	r = tn->removed;
	pthread_mutex_unlock(&tn->lock);
	return r;
}

const char *tenant_name(const struct tenant *tn)
{
	return tn->name;
}

bool tenant_admits_uid(struct tenant *tn, uid_t uid)
{
	bool ok = false;

	pthread_mutex_lock(&tn->lock);
	for (unsigned i = 0; i < tn->n_uids && !ok; i++)
		ok = tn->uids[i] == uid;
	pthread_mutex_unlock(&tn->lock);
	return ok;
}

/*
 * use + n within *limit (0 = unlimited)? Takes it when so; counts a rejection otherwise. The
 * limit is read under the lock: a reload may change it. A limit lowered below the use refuses
 * every new take and gives nothing back.
 */
static int take(struct tenant *tn, uint64_t *use, uint64_t n, const uint64_t *limit, int errnum)
{
	int r = 0;

	pthread_mutex_lock(&tn->lock);
	if (*limit && (*use + n > *limit || *use + n < *use)) {
		tn->rejected++;
		r = errnum;
	} else {
		*use += n;
	}
	pthread_mutex_unlock(&tn->lock);
	return r;
}

static void give(struct tenant *tn, uint64_t *use, uint64_t n)
{
	pthread_mutex_lock(&tn->lock);
	*use = *use >= n ? *use - n : 0;
	pthread_mutex_unlock(&tn->lock);
}

int tenant_session_acquire(struct tenant *tn, uint64_t bytes)
{
	int r = take(tn, &tn->sessions, 1, &tn->max_sessions, -EDQUOT);

	if (r)
		return r;
	r = take(tn, &tn->bytes, bytes, &tn->quota_bytes, -EDQUOT);
	if (r)
		give(tn, &tn->sessions, 1);
	return r;
}

void tenant_session_release(struct tenant *tn, uint64_t bytes)
{
	give(tn, &tn->bytes, bytes);
	give(tn, &tn->sessions, 1);
}

int tenant_seq_acquire(struct tenant *tn)
{
	return take(tn, &tn->seqs, 1, &tn->max_seqs, -EDQUOT);
}

void tenant_seq_release(struct tenant *tn)
{
	give(tn, &tn->seqs, 1);
}

/*
 * Optimistic: add, then back out past the cap. Two batches racing at the cap may both back
 * out where one would have fit. Batches that began before a reload set a cap were not
 * counted, so for a moment after such a reload the cap can be passed by them.
 */
int tenant_inflight_acquire(struct tenant *tn, uint64_t n)
{
	uint64_t cap = atomic_load_explicit(&tn->inflight_cap, memory_order_relaxed);
	uint64_t was;

	if (!cap)
		return 0; /* unlimited: nothing to count against */
	was = atomic_fetch_add_explicit(&tn->inflight, n, memory_order_relaxed);
	if (was + n <= cap && was + n >= was)
		return 0;
	atomic_fetch_sub_explicit(&tn->inflight, n, memory_order_relaxed);
	pthread_mutex_lock(&tn->lock);
	tn->rejected++;
	pthread_mutex_unlock(&tn->lock);
	return -EBUSY;
}

void tenant_inflight_release(struct tenant *tn, uint64_t n)
{
	/* a batch taken while the tenant had no cap was never counted */
	uint64_t cur = atomic_load_explicit(&tn->inflight, memory_order_relaxed);

	while (cur && !atomic_compare_exchange_weak_explicit(&tn->inflight, &cur,
							     cur >= n ? cur - n : 0,
							     memory_order_relaxed, memory_order_relaxed))
		;
}

int tenant_disk_acquire(struct tenant *tn, uint64_t bytes)
{
	return take(tn, &tn->disk_bytes, bytes, &tn->disk_quota, -EDQUOT);
}

void tenant_disk_release(struct tenant *tn, uint64_t bytes)
{
	give(tn, &tn->disk_bytes, bytes);
}

void tenant_get_usage(struct tenant *tn, struct tenant_usage *u)
{
	pthread_mutex_lock(&tn->lock);
	*u = (struct tenant_usage){.bytes = tn->bytes,
				   .sessions = tn->sessions,
				   .seqs = tn->seqs,
				   .inflight = atomic_load_explicit(&tn->inflight,
								    memory_order_relaxed),
				   .quota_bytes = tn->quota_bytes,
				   .max_sessions = tn->max_sessions,
				   .max_seqs = tn->max_seqs,
				   .max_inflight = tn->max_inflight,
				   .disk_bytes = tn->disk_bytes,
				   .disk_quota = tn->disk_quota,
				   .rejected = tn->rejected,
				   .removed = tn->removed};
	pthread_mutex_unlock(&tn->lock);
}

/* ---- reload --------------------------------------------------------------------------- */

/* Copy what a tenants line sets (uids and limits) from src; tn->lock held. True if changed. */
static bool apply_line(struct tenant *tn, const struct tenant *src)
{
	bool changed = tn->n_uids != src->n_uids ||
		       memcmp(tn->uids, src->uids, src->n_uids * sizeof(src->uids[0])) ||
		       tn->quota_bytes != src->quota_bytes ||
		       tn->max_sessions != src->max_sessions || tn->max_seqs != src->max_seqs ||
		       tn->max_inflight != src->max_inflight || tn->disk_quota != src->disk_quota;

	memcpy(tn->uids, src->uids, sizeof(tn->uids));
	tn->n_uids = src->n_uids;
	tn->quota_bytes = src->quota_bytes;
	tn->max_sessions = src->max_sessions;
	tn->max_seqs = src->max_seqs;
	tn->max_inflight = src->max_inflight;
	atomic_store_explicit(&tn->inflight_cap, src->max_inflight, memory_order_relaxed);
	tn->disk_quota = src->disk_quota;
	return changed;
}

/* Merge the freshly parsed nt into t (t->lock held; t->v has room for nt->n more). */
static void merge(struct tenant_table *t, struct tenant_table *nt, struct tenant_reload *rl)
{
	size_t n_old = t->n;

	for (size_t i = 0; i < nt->n; i++) {
		struct tenant *src = nt->v[i], *tn = find_any(t, src->name);
		if (!tn) {
			t->v[t->n++] = src; /* moved: nt no longer owns it */
			nt->v[i] = NULL;
			rl->added++;
			continue;
		}
		pthread_mutex_lock(&tn->lock);
		if (tn->removed) {
			tn->removed = false;
			(void)apply_line(tn, src);
			rl->added++;
		} else if (apply_line(tn, src)) {
			rl->changed++;
		} else {
			rl->unchanged++;
		}
		pthread_mutex_unlock(&tn->lock);
	}
	for (size_t i = 0; i < n_old; i++) {
		struct tenant *tn = t->v[i];
		if (find_any(nt, tn->name))
			continue;
		pthread_mutex_lock(&tn->lock);
		if (!tn->removed) {
			tn->removed = true;
			rl->removed++;
			rl->removed_sessions += tn->sessions;
		}
		pthread_mutex_unlock(&tn->lock);
	}
	for (size_t i = 0; i < t->n; i++)
		rl->active += !t->v[i]->removed;
}

/*
 * The allow-list from keys_text against t's tenants as they are now (removed ones cannot be
 * named), swapped in whole: the ZAP thread sees the old list or the new one, never a part.
 */
static int keys_replace(struct tenant_table *t, const char *keys_text, const char *source,
			char *err, size_t err_len)
{
	struct tenant_table tmp = {0};
	struct tenant_key *old;
	int r = 0;

	pthread_mutex_init(&tmp.lock, NULL);
	pthread_mutex_lock(&t->lock);
	tmp.v = malloc((t->n ? t->n : 1) * sizeof(*tmp.v)); /* a view: the tenants stay t's */
	if (tmp.v) {
		memcpy(tmp.v, t->v, t->n * sizeof(*tmp.v));
		tmp.n = t->n;
	}
	pthread_mutex_unlock(&t->lock);
	if (!tmp.v)
		r = -ENOMEM;
	if (!r)
		r = for_each_line(&tmp, keys_text, source, parse_key_line, false, err, err_len);
	if (!r) {
		pthread_mutex_lock(&t->lock);
		old = t->keys;
		t->keys = tmp.keys;
		t->n_keys = tmp.n_keys;
		t->cap_keys = tmp.cap_keys;
		pthread_mutex_unlock(&t->lock);
		tmp.keys = old;
	}
	free(tmp.keys);
	free(tmp.v);
	pthread_mutex_destroy(&tmp.lock);
	return r;
}

int tenant_table_reload(struct tenant_table *t, const char *path, const char *keys_path,
			struct tenant_reload *rl, char *err, size_t err_len)
{
	struct tenant_table *nt = NULL;
	char *keys_text = NULL, keys_source[300];
	int r;

	*rl = (struct tenant_reload){0};
	if (!path || !path[0]) {
		snprintf(err, err_len, "no tenants file configured (built-in tenant 'default')");
		r = -ENOENT;
		goto out;
	}
	r = tenant_table_load(path, 0, 0, &nt, err, err_len);
	if (!r && keys_path && keys_path[0]) {
		r = read_file(keys_path, &keys_text, err, err_len);
		snprintf(keys_source, sizeof(keys_source), "file %s", keys_path);
	}
	/* the allow-list must fit the new tenants, or nothing changes */
	if (!r && keys_text)
		r = tenant_table_parse_keys(nt, keys_text, keys_source, err, err_len);
	if (r)
		goto out;
	pthread_mutex_lock(&t->lock);
	r = grow((void **)&t->v, &t->cap, t->n + nt->n, sizeof(*t->v));
	if (r)
		snprintf(err, err_len, "out of memory");
	else
		merge(t, nt, rl);
	pthread_mutex_unlock(&t->lock);
	if (!r && keys_text) {
		r = keys_replace(t, keys_text, keys_source, err, err_len);
		rl->keys = r ? 0 : t->n_keys;
	}
out:
	free(keys_text);
	pthread_mutex_lock(&t->lock);
	if (r)
		t->reload_failures++;
	else
		t->reloads++;
	pthread_mutex_unlock(&t->lock);
	tenant_table_free(nt);
	return r;
}

void tenant_reload_counts(struct tenant_table *t, uint64_t *ok, uint64_t *failed)
{
	pthread_mutex_lock(&t->lock);
	*ok = t->reloads;
	*failed = t->reload_failures;
	pthread_mutex_unlock(&t->lock);
}
