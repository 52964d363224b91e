/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The host KV store backed by a sparda-memsvc session: attach through the client library, use
 * the session's arena and residency words directly, and send allocations and commits over the
 * control path. A daemon that dies or drains turns every later call into an error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "client.h"
#include "err.h"
#include "kvhost.h"

struct kvm {
	struct kvhost h;
	struct memclient *c;
	struct memclient_seq *seqs;
	uint32_t max_seqs;
	struct memclient_unit *units;
	struct memclient_result *res;
	uint32_t batch_cap;
};

static struct kvm *to_kvm(struct kvhost *h)
{
	return (struct kvm *)h;
}

static void kvm_close(struct kvhost *h)
{
	struct kvm *p = to_kvm(h);
	memclient_close(p->c);
	free(p->seqs);
	free(p->units);
	free(p->res);
	free(p);
}

static int kvm_seq_open(struct kvhost *h, uint64_t key, uint32_t max_blocks, uint32_t *seq,
			int64_t *word_base)
{
	struct kvm *p = to_kvm(h);
	struct memclient_seq s;
	int rc = memclient_seq_open(p->c, key, max_blocks, &s);
	if (rc)
		return rc;
	if (s.index >= p->max_seqs) {
		memclient_seq_close(p->c, s);
		return -ENOSPC;
	}
	rc = memclient_seq_word_base(p->c, s, word_base);
	if (rc) {
		memclient_seq_close(p->c, s);
		return rc;
	}
	p->seqs[s.index] = s;
	*seq = s.index;
	return 0;
}

static int kvm_seq_close(struct kvhost *h, uint32_t seq)
{
	struct kvm *p = to_kvm(h);
	if (seq >= p->max_seqs)
		return -EINVAL;
	return memclient_seq_close(p->c, p->seqs[seq]);
}

/* Build the unit list of a block range; returns -E2BIG over the batch capacity. */
static int fill_units(struct kvm *p, uint32_t seq, uint32_t layer, uint32_t head, uint32_t block,
		      uint32_t count)
{
	if (seq >= p->max_seqs)
		return -EINVAL;
	if (count > p->batch_cap)
		return -E2BIG;
	for (uint32_t i = 0; i < count; i++)
		p->units[i] = (struct memclient_unit){ .seq = p->seqs[seq], .layer = layer,
						       .head = head, .block = block + i };
	return 0;
}

static int first_error(const struct memclient_result *res, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (res[i].status)
			return res[i].status;
	return 0;
}

static int kvm_alloc(struct kvhost *h, uint32_t seq, uint32_t layer, uint32_t head,
		     uint32_t block, uint32_t count, int32_t *slots)
{
	struct kvm *p = to_kvm(h);
	int rc = fill_units(p, seq, layer, head, block, count);
	if (!rc)
		rc = memclient_alloc_wait(p->c, p->units, count, p->res, -1);
	if (!rc)
		rc = first_error(p->res, count);
	for (uint32_t i = 0; !rc && i < count; i++)
		slots[i] = (int32_t)p->res[i].slot;
	return rc;
}

static int kvm_commit(struct kvhost *h, uint32_t seq, uint32_t layer, uint32_t head,
		      uint32_t block, uint32_t count)
{
	struct kvm *p = to_kvm(h);
	int rc = fill_units(p, seq, layer, head, block, count);
	if (!rc)
		rc = memclient_commit(p->c, p->units, count, 0, p->res);
	return rc ? rc : first_error(p->res, count);
}

static int fill_list(struct kvm *p, const struct kvhost_unit *u, uint32_t n)
{
	if (n > p->batch_cap)
		return -E2BIG;
	for (uint32_t i = 0; i < n; i++) {
		if (u[i].seq >= p->max_seqs)
			return -EINVAL;
		p->units[i] = (struct memclient_unit){ .seq = p->seqs[u[i].seq], .layer = u[i].layer,
						       .head = u[i].head, .block = u[i].block };
	}
	return 0;
}

static int kvm_alloc_units(struct kvhost *h, const struct kvhost_unit *u, uint32_t n,
			   int32_t *slots)
{
	struct kvm *p = to_kvm(h);
	int rc = fill_list(p, u, n);
	if (!rc)
		rc = memclient_alloc_wait(p->c, p->units, n, p->res, -1);
	if (!rc)
		rc = first_error(p->res, n);
	for (uint32_t i = 0; !rc && i < n; i++)
		slots[i] = (int32_t)p->res[i].slot;
	return rc;
}

static int kvm_commit_units(struct kvhost *h, const struct kvhost_unit *u, uint32_t n)
{
	struct kvm *p = to_kvm(h);
	int rc = fill_list(p, u, n);
	if (!rc)
		rc = memclient_commit(p->c, p->units, n, 0, p->res);
	return rc ? rc : first_error(p->res, n);
}

/* A Forecast over the rings: leases, selection steps, restores from the NVMe tier. */
static int kvm_forecast(struct kvhost *h, const struct kvhost_unit *u, uint32_t n, uint64_t step)
{
	struct kvm *p = to_kvm(h);
	int rc = fill_list(p, u, n);
	if (!rc)
		rc = memclient_forecast(p->c, p->units, n, step, p->res);
	return rc ? rc : first_error(p->res, n);
}

static int kvm_epoch(struct kvhost *h, uint64_t step)
{
	memclient_epoch_publish(to_kvm(h)->c, step);
	return 0;
}

static int kvm_health(struct kvhost *h)
{
	return memclient_ping(to_kvm(h)->c);
}

static const struct kvhost_ops kvm_ops = {
	.name = "memsvc",
	.close = kvm_close,
	.seq_open = kvm_seq_open,
	.seq_close = kvm_seq_close,
	.alloc = kvm_alloc,
	.commit = kvm_commit,
	.alloc_units = kvm_alloc_units,
	.commit_units = kvm_commit_units,
	.epoch = kvm_epoch,
	.health = kvm_health,
	.forecast = kvm_forecast,
};

/* Whether the daemon has an NVMe tier (then this session's units may be spilled). */
static bool daemon_spills(struct memclient *c)
{
	struct memclient_stat *st = NULL;
	uint64_t v = 0;
	uint32_t n = 0;
	bool yes = false;

	if (memclient_stats(c, &st, &n) == 0)
		yes = memclient_stat_find(st, n, "daemon.spill.enabled", &v) && v;
	free(st);
	return yes;
}

int kvhost_memsvc_open(const struct kvhost_opts *o, struct kvhost **out, char *err,
		       size_t err_len)
{
	struct memclient_opts mo = {
		.runtime_dir = o->runtime_dir,
		.tenant = o->tenant,
		.client_name = "sparda-compute",
		.geom = o->geom,
		.arena_bytes = o->arena_bytes,
		.max_seqs = o->max_seqs,
		.wait_mode = o->poll ? SP_WAIT_POLL : SP_WAIT_SLEEP,
		.timeout_ms = o->timeout_ms ? (int)o->timeout_ms : 5000,
	};
	struct kvm *p = calloc(1, sizeof(*p));
	char why[320] = ""; /* the daemon's refusal, or the check that failed */
	int rc;

	if (!p)
		return -ENOMEM;
	mo.error = why;
	mo.error_len = sizeof(why);
	rc = memclient_open(&mo, &p->c);
	if (rc) {
		snprintf(err, err_len, "cannot attach to sparda-memsvc (runtime dir %s): %s%s%s%s",
			 o->runtime_dir ? o->runtime_dir : "default", err_str(rc),
			 rc == -ENOENT || rc == -ECONNREFUSED ? "; is the daemon running?" : "",
			 why[0] ? ": " : "", why);
		free(p);
		return rc;
	}
	p->max_seqs = o->max_seqs;
	p->batch_cap = 65536;
	p->seqs = calloc(o->max_seqs, sizeof(*p->seqs));
	p->units = calloc(p->batch_cap, sizeof(*p->units));
	p->res = calloc(p->batch_cap, sizeof(*p->res));
	if (!p->seqs || !p->units || !p->res) {
		kvm_close(&p->h);
		return -ENOMEM;
	}
	p->h.ops = &kvm_ops;
	p->h.unit_bytes = memclient_geometry(p->c)->unit_bytes;
	memclient_arena(p->c, &p->h.arena, &p->h.arena_bytes);
	memclient_unit_words(p->c, &p->h.words, &p->h.words_bytes);
	p->h.may_spill = daemon_spills(p->c);
	p->h.priv = p;
	*out = &p->h;
	return 0;
}
