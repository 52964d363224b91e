/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tenants: who may attach (uids), and per-tenant limits with their current use: arena bytes,
 * sessions, open sequences and in-flight ring entries. Loaded from the tenants file (or the
 * built-in "default" tenant) and reloaded from it on request; over a limit a caller gets
 * -EDQUOT / -EBUSY and other tenants are unaffected. Also holds the tcp key allow-list (CURVE
 * public key -> tenant).
 */
#ifndef SPARDA_MEMSVC_TENANT_H
#define SPARDA_MEMSVC_TENANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TENANT_NAME_MAX 64 /* NUL included; same as WIRE_NAME_MAX */
#define TENANT_MAX_UIDS 16
#define TENANT_KEY_Z85 40 /* length of a z85 CURVE public key */

struct tenant;
struct tenant_table;

struct tenant_usage {
	uint64_t bytes, sessions, seqs, inflight;
	uint64_t quota_bytes, max_sessions, max_seqs, max_inflight; /* 0 = unlimited */
	uint64_t rejected;		 /* requests refused for a limit of this tenant */
	uint64_t disk_bytes, disk_quota; /* spill file bytes reserved by its sessions; 0 = none */
	bool removed;			 /* dropped by a reload; its open sessions run on */
};

/* What a reload did: tenants added (or restored), changed, unchanged, removed; active after. */
struct tenant_reload {
	size_t added, changed, unchanged, removed, active;
	size_t keys; /* tcp allow-list entries after the reload (0 when not reloaded) */
	uint64_t removed_sessions; /* sessions still open in the tenants just removed */
};

/*
 * Parse a tenants file text. Lines: `name uid=U[,U..] quota=BYTES [max-sessions=N]
 * [max-seqs=N] [max-inflight=N] [disk-quota=BYTES]` (disk-quota: spill file bytes); '#' starts a
 * comment; blank lines ignored. source names the text in errors ("file /etc/sparda/tenants line 3:
 * ..."). Returns 0 or -EINVAL (unknown key, bad number, duplicate name, missing uid= or quota=,
 * name too long), -ENOMEM.
 */
int tenant_table_parse(const char *text, const char *source, struct tenant_table **out, char *err,
		       size_t err_len);

/*
 * Load the tenants file at path, or, when path is NULL or empty, build the table with one
 * tenant "default" that admits self_uid and root with quota default_quota (0 = unlimited).
 * Returns 0, -ENOENT/-EACCES/-EIO (file), or a parse error as above.
 */
int tenant_table_load(const char *path, uid_t self_uid, uint64_t default_quota,
		      struct tenant_table **out, char *err, size_t err_len);

/*
 * Add the tcp allow-list from text (lines `tenant z85-public-key`); every tenant named must
 * exist. Returns 0 or -EINVAL naming the line.
 */
int tenant_table_parse_keys(struct tenant_table *t, const char *text, const char *source, char *err,
			    size_t err_len);

void tenant_table_free(struct tenant_table *t);

/*
 * Re-read the tenants file at path into t, in place: the file is parsed whole first and a bad
 * one changes nothing (-EINVAL with err naming the line, or the file's -errno; -ENOENT when
 * path is empty: the built-in table has no file). Otherwise tenants new in the file are added;
 * kept ones take the file's uids and limits (they apply to the next acquire; use above a
 * lowered limit stays, new acquires are refused); tenants gone from the file are marked removed:
 * tenant_find no longer names them, their open sessions run on. No tenant is ever freed before
 * the table, so every tenant pointer stays valid. With keys_path (the tcp allow-list file,
 * NULL or "": keys untouched) the list is checked against the new tenants before anything
 * changes and then replaces the old one whole (a removed tenant's key no longer admits). Call
 * from one thread at a time (the server loop); the other calls may run concurrently. Counts
 * the reload or its failure.
 */
int tenant_table_reload(struct tenant_table *t, const char *path, const char *keys_path,
			struct tenant_reload *rl, char *err, size_t err_len);
/* Reloads done and refused since the table was loaded. */
void tenant_reload_counts(struct tenant_table *t, uint64_t *ok, uint64_t *failed);

/* Tenants in the table, removed ones included (tenant_at iterates them all). */
size_t tenant_count(struct tenant_table *t);
struct tenant *tenant_at(struct tenant_table *t, size_t i);
/* NULL when no tenant has that name, or it was removed by a reload. */
struct tenant *tenant_find(struct tenant_table *t, const char *name);
/* The tenant a z85 CURVE public key maps to, or NULL (unknown key, or its tenant removed). */
struct tenant *tenant_find_key(struct tenant_table *t, const char *z85);
const char *tenant_name(const struct tenant *tn);
bool tenant_admits_uid(struct tenant *tn, uid_t uid);
/* Was the tenant removed by a reload (it then admits no new session)? */
bool tenant_removed(struct tenant *tn);

/*
 * Limits. The acquire calls take the resource or return -EDQUOT (-EBUSY for in-flight) and
 * count a rejection; release gives it back. Thread safe (a lock per table).
 */
int tenant_session_acquire(struct tenant *tn, uint64_t bytes);
void tenant_session_release(struct tenant *tn, uint64_t bytes);
int tenant_seq_acquire(struct tenant *tn);
void tenant_seq_release(struct tenant *tn);
int tenant_inflight_acquire(struct tenant *tn, uint64_t n);
void tenant_inflight_release(struct tenant *tn, uint64_t n);
/* Spill file bytes of the tenant's sessions (NVMe tier): -EDQUOT over disk-quota. */
int tenant_disk_acquire(struct tenant *tn, uint64_t bytes);
void tenant_disk_release(struct tenant *tn, uint64_t bytes);
void tenant_get_usage(struct tenant *tn, struct tenant_usage *u);

#endif
