/* SPDX-License-Identifier: Apache-2.0 */
/*
 * NVMe tier storage: the extent bitmap, and batched writes / verified reads
 * through staging buffers (registered as aio fixed buffers) so that a unit reaches the
 * caller only after its header and CRC32C checked out; restores into a registered arena read
 * the unit straight into its slot and verify it there. Two lanes, each with its own staging
 * buffer, let one call be staged while the other's I/O is in flight, so the disk never waits
 * for the CPU between batches. See tier_nvme.h for the contract; the spill files, opening and
 * freeing are in tier_nvme_open.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "err.h"
#include "log.h"
#include "shm_abi.h"
#include "tier_nvme_internal.h"
#include "timeutil.h"

/* ---- extents ---------------------------------------------------------------------------- */

static bool tn_ext_used(const struct tier_nvme *t, uint64_t e)
{
	return t->bitmap[e / 64] >> (e % 64) & 1u;
}

static void tn_ext_set(struct tier_nvme *t, uint64_t e, bool used)
{
	if (used)
		t->bitmap[e / 64] |= 1ull << (e % 64);
	else
		t->bitmap[e / 64] &= ~(1ull << (e % 64));
	t->st.extents_used += used ? 1 : (uint64_t)-1;
}

/* Make sure the file holding extent e has space reserved for it. 0 or -errno. */
int tier_nvme_file_reserve(struct tier_nvme *t, uint64_t e)
{
	struct tn_file *f = &t->files[e / t->per_file];
	uint64_t end = (e % t->per_file + 1) * t->ext_bytes, cap = t->per_file * t->ext_bytes;
	uint64_t want;

	if (end <= f->alloc_bytes)
		return 0;
	want = f->alloc_bytes + t->o.grow_bytes;
	want = want < end ? end : want > cap ? cap : want;
	if (fallocate(f->fd, 0, (off_t)f->alloc_bytes, (off_t)(want - f->alloc_bytes)) < 0) {
		int rc = err_from_errno();
		if (rc != -EOPNOTSUPP)
			return rc;
		/* no reservation on this filesystem: ENOSPC then shows up on write */
		if (ftruncate(f->fd, (off_t)want) < 0)
			return err_from_errno();
	}
	f->alloc_bytes = want;
	return 0;
}

/*
 * Allocate one extent, next-fit from the hint so consecutive calls get consecutive extents.
 * Returns 0, -EDQUOT (all in use), or the fallocate error (-ENOSPC: the filesystem is full).
 */
static int tn_ext_alloc(struct tier_nvme *t, uint64_t *out)
{
	uint64_t words = (t->n_ext + 63) / 64;

	for (uint64_t i = 0; i <= words; i++) {
		uint64_t w = (t->hint / 64 + i) % words, bits = ~t->bitmap[w];
		int rc;

		if (i == 0)
			bits &= ~0ull << (t->hint % 64);
		if (!bits)
			continue;
		uint64_t e = w * 64 + (uint64_t)__builtin_ctzll(bits);
		if (e >= t->n_ext)
			continue;
		rc = tier_nvme_file_reserve(t, e);
		if (rc < 0)
			return rc;
		tn_ext_set(t, e, true);
		t->hint = e + 1 < t->n_ext ? e + 1 : 0;
		*out = e;
		return 0;
	}
	return -EDQUOT; /* every extent in use */
}

int tier_nvme_extent_free(struct tier_nvme *t, uint64_t extent)
{
	if (extent >= t->n_ext)
		return -EINVAL;
	if (!tn_ext_used(t, extent))
		return -ENOENT;
	tn_ext_set(t, extent, false);
	return 0;
}

uint64_t tier_nvme_ext_off(const struct tier_nvme *t, uint64_t e)
{
	return (e % t->per_file) * t->ext_bytes;
}

/* ---- degraded state --------------------------------------------------------------------- */

static void tn_enospc(struct tier_nvme *t, const char *where)
{
	t->st.enospc_events++;
	t->retry_ms = time_now_ms() + t->o.backoff_ms;
	if (t->st.degraded)
		return;
	t->st.degraded = true;
	t->st.degraded_entries++;
	log_warn(TN_TAG, "spill space exhausted, degraded to RAM-only", "where=%s retry_ms=%u",
		 where, t->o.backoff_ms);
}

static void tn_recovered(struct tier_nvme *t)
{
	if (!t->st.degraded)
		return;
	t->st.degraded = false;
	t->st.recoveries++;
	log_info(TN_TAG, "spill space available again, tier recovered", "extents_used=%llu",
		 (unsigned long long)t->st.extents_used);
}

bool tier_nvme_degraded(const struct tier_nvme *t)
{
	return t->st.degraded;
}

/* ---- headers ---------------------------------------------------------------------------- */

static uint8_t *tn_slot(const struct tier_nvme *t, const struct tn_lane *l, uint32_t k)
{
	return l->stage + (uint64_t)k * t->ext_bytes;
}

static uint32_t tn_crc(const struct tier_nvme_hdr *h, const uint8_t *data, uint32_t len)
{
	struct tier_nvme_hdr c = *h;

	c.crc = 0;
	return crc32c(crc32c(0, &c, sizeof(c)), data, len);
}

static void tn_stage_unit(struct tier_nvme *t, uint8_t *blk, const struct tier_nvme_key *key,
			  uint64_t e, const void *unit)
{
	struct tier_nvme_hdr h = {.magic = TIER_NVME_MAGIC,
				  .version = TIER_NVME_VERSION,
				  .unit_bytes = t->o.unit_bytes,
				  .session = key->session,
				  .extent = e,
				  .tenant = key->tenant,
				  .seq = key->seq,
				  .layer = key->layer,
				  .head = key->head,
				  .block = key->block,
				  .gen = key->gen};

	memset(blk, 0, t->hdr_bytes);
	memcpy(blk + t->hdr_bytes, unit, t->o.unit_bytes);
	memset(blk + t->hdr_bytes + t->o.unit_bytes, 0,
	       t->ext_bytes - t->hdr_bytes - t->o.unit_bytes);
	h.crc = tn_crc(&h, blk + t->hdr_bytes, t->o.unit_bytes);
	memcpy(blk, &h, sizeof(h));
}

/*
 * 0 when the header block blk and the unit read are the unit asked for, else -EBADMSG with the
 * counter moved.
 */
static int tn_verify(struct tier_nvme *t, const uint8_t *blk, const uint8_t *unit,
		     const struct tier_nvme_key *key, uint64_t e)
{
	struct tier_nvme_hdr h;

	memcpy(&h, blk, sizeof(h));
	if (h.crc != tn_crc(&h, unit, t->o.unit_bytes)) {
		t->st.crc_failures++;
		return -EBADMSG;
	}
	if (h.magic != TIER_NVME_MAGIC || h.version != TIER_NVME_VERSION ||
	    h.unit_bytes != t->o.unit_bytes || h.extent != e || h.tenant != key->tenant ||
	    h.session != key->session || h.seq != key->seq || h.layer != key->layer ||
	    h.head != key->head || h.block != key->block || h.gen != key->gen) {
		t->st.id_mismatches++;
		return -EBADMSG;
	}
	return 0;
}

/* ---- completions ------------------------------------------------------------------------ */

static void tn_write_done(struct tier_nvme *t, struct tn_lane *l, struct tn_group *g, int res)
{
	uint64_t len = (uint64_t)g->n * t->ext_bytes;
	bool ok = res >= 0 && (uint64_t)res == len;

	if (ok) {
		t->st.units_written += g->n;
		t->st.bytes_written += len;
	} else if (res == -ENOSPC) {
		tn_enospc(t, "write");
	} else if (res != -ETIMEDOUT) {
		t->st.io_errors++;
	}
	for (uint32_t m = 0; m < g->n; m++) {
		struct tier_nvme_wreq *w = l->cur_w ? &l->cur_w[l->slot_req[g->k0 + m]] : NULL;
		if (!ok)
			tier_nvme_extent_free(t, g->first_ext + m);
		if (w)
			w->res = ok ? 0 : res < 0 ? res : -EIO;
	}
}

static void tn_read_done(struct tier_nvme *t, struct tn_lane *l, struct tn_group *g, int res)
{
	uint64_t len =
	    g->direct ? (uint64_t)t->hdr_bytes + t->o.unit_bytes : (uint64_t)g->n * t->ext_bytes;
	bool ok = res >= 0 && (uint64_t)res == len;

	if (!l->cur_r)
		return;
	if (!ok && res != -ETIMEDOUT)
		t->st.io_errors++;
	if (ok)
		t->st.bytes_read += len;
	for (uint32_t m = 0; m < g->n; m++) {
		struct tier_nvme_rreq *r = &l->cur_r[l->slot_req[g->k0 + m]];
		const uint8_t *blk = tn_slot(t, l, g->k0 + m);
		if (!ok) {
			r->res = res < 0 ? res : -EIO;
			continue;
		}
		if (g->direct) { /* the unit is in dst already: verified where it landed */
			r->res = tn_verify(t, blk, r->dst, &r->key, g->first_ext);
			t->st.units_read += r->res == 0;
			continue;
		}
		r->res = tn_verify(t, blk, blk + t->hdr_bytes, &r->key, g->first_ext + m);
		if (r->res == 0) {
			memcpy(r->dst, blk + t->hdr_bytes, t->o.unit_bytes);
			t->st.units_read++;
		}
	}
}

static void tn_group_done(struct tier_nvme *t, struct tn_lane *l, uint32_t gi, int res)
{
	struct tn_group *g = &l->groups[gi];

	if (g->pending)
		l->inflight--;
	g->pending = false;
	l->done++;
	if (g->write)
		tn_write_done(t, l, g, res);
	else
		tn_read_done(t, l, g, res);
}

/* A direct group's result from its two parts: header block + unit bytes, or an error. */
static int tn_direct_res(const struct tier_nvme *t, const struct tn_group *g)
{
	if (g->res[0] < 0)
		return g->res[0];
	if (g->res[1] < 0)
		return g->res[1];
	if ((uint32_t)g->res[0] != t->hdr_bytes || (uint32_t)g->res[1] != t->o.unit_bytes)
		return -EIO; /* end of file: the extent was never written whole */
	return (int)(t->hdr_bytes + t->o.unit_bytes);
}

/* Route a completion to its lane's group; stale tags (of no live call) are dropped. */
static void tn_dispatch(struct tier_nvme *t, const struct aio_cqe *c)
{
	uint32_t gi = (uint32_t)c->tag >> 1, part = (uint32_t)c->tag & 1u;

	for (uint32_t i = 0; i < TN_LANES; i++) {
		struct tn_lane *l = &t->lanes[i];
		struct tn_group *g;
		int res = c->res;
		if (!(l->busy || l->stuck) || c->tag >> 32 != l->call_id || gi >= l->ng ||
		    !l->groups[gi].pending)
			continue;
		g = &l->groups[gi];
		if (g->direct) { /* done when both parts are: dst belongs to the I/O until then */
			g->res[part] = c->res;
			if (--g->left > 0)
				return;
			res = tn_direct_res(t, g);
		}
		/* a stuck lane's requests are gone: only its extents are still ours */
		tn_group_done(t, l, gi, l->stuck ? -ETIMEDOUT : res);
		return;
	}
}

/* Reap what finished (waiting up to timeout_ms for the first). Returns the count or <= 0. */
static int tn_reap(struct tier_nvme *t, int timeout_ms)
{
	struct aio_cqe c[16];
	int got = aio_reap(t->aio, c, 16, timeout_ms);

	for (int i = 0; i < got; i++)
		tn_dispatch(t, &c[i]);
	return got;
}

/* Timed-out calls: collect what finished since, without waiting. 0, or -EBUSY while a stuck
 * lane's I/O is still in flight (new calls are refused until the disk answers). */
int tier_nvme_io_drain(struct tier_nvme *t)
{
	bool stuck = false;

	for (uint32_t i = 0; i < TN_LANES; i++)
		stuck |= t->lanes[i].stuck;
	if (!stuck)
		return 0;
	while (tn_reap(t, 0) > 0)
		;
	for (uint32_t i = 0; i < TN_LANES; i++) {
		struct tn_lane *l = &t->lanes[i];
		if (l->stuck && l->inflight > 0)
			return -EBUSY;
		l->stuck = false;
	}
	return 0;
}

/* Time out: what never started fails now; what is in flight keeps the staging buffer. */
static int tn_timeout(struct tier_nvme *t, struct tn_lane *l)
{
	for (uint32_t gi = 0; gi < l->ng; gi++) {
		struct tn_group *g = &l->groups[gi];
		if (gi >= l->next) {
			tn_group_done(t, l, gi, -ETIMEDOUT);
			continue;
		}
		if (!g->pending)
			continue;
		for (uint32_t m = 0; m < g->n; m++) {
			uint32_t j = l->slot_req[g->k0 + m];
			if (g->write) {
				l->cur_w[j].res = -ETIMEDOUT;
				continue;
			}
			l->cur_r[j].res = -ETIMEDOUT;
			l->cur_r[j].dst_busy = g->direct; /* the kernel may still write it */
		}
	}
	t->st.io_errors++;
	l->busy = false;
	l->stuck = l->inflight > 0;
	l->cur_w = NULL; /* the caller's requests are answered; only the extents stay ours */
	l->cur_r = NULL;
	log_warn(TN_TAG, "spill I/O timed out", "in_flight=%u timeout_ms=%d", aio_inflight(t->aio),
		 t->o.io_timeout_ms);
	return -ETIMEDOUT;
}

/*
 * Copy a write group's units (header, CRC32C) into its staging slots just before it is
 * submitted, so staging the next group overlaps the I/O of the ones before it.
 */
static void tn_stage_group(struct tier_nvme *t, struct tn_lane *l, struct tn_group *g)
{
	if (!g->write || g->staged || !l->cur_w)
		return;
	for (uint32_t m = 0; m < g->n; m++) {
		const struct tier_nvme_wreq *w = &l->cur_w[l->slot_req[g->k0 + m]];
		tn_stage_unit(t, tn_slot(t, l, g->k0 + m), &w->key, g->first_ext + m, w->unit);
	}
	g->staged = true;
}

/*
 * Queue a direct read's two parts: the header block into its staging slot and the unit
 * straight into dst (both fixed buffers). 0, -EBUSY (no room for both: nothing queued), or the
 * error of the first part (nothing queued); an error of the second is kept as its result and
 * the group completes when the first part does.
 */
static int tn_prep_direct(struct tier_nvme *t, struct tn_lane *l, struct tn_group *g)
{
	const struct tier_nvme_rreq *r = &l->cur_r[l->slot_req[g->k0]];
	uint64_t off = tier_nvme_ext_off(t, g->first_ext), tag = l->call_id << 32 | (uint64_t)l->next << 1;
	int rc;

	if (aio_inflight(t->aio) + 2 > t->o.queue_depth)
		return -EBUSY;
	rc = aio_prep(t->aio, AIO_OP_READ, g->file, tn_slot(t, l, g->k0), t->hdr_bytes, off, tag);
	if (rc < 0)
		return rc;
	g->left = 1;
	g->res[1] = aio_prep(t->aio, AIO_OP_READ, g->file, r->dst, t->o.unit_bytes,
			     off + t->hdr_bytes, tag | 1u);
	if (g->res[1] == 0)
		g->left = 2;
	t->st.direct_reads++;
	return 0;
}

/* Submit the lane's groups while the queue has room (staging each write group first). */
static void tn_pump(struct tier_nvme *t, struct tn_lane *l)
{
	for (; l->next < l->ng; l->next++) {
		struct tn_group *g = &l->groups[l->next];
		int rc;
		tn_stage_group(t, l, g);
		if (g->direct)
			rc = tn_prep_direct(t, l, g);
		else
			rc = aio_prep(t->aio, g->write ? AIO_OP_WRITE : AIO_OP_READ, g->file,
				      tn_slot(t, l, g->k0), (size_t)g->n * t->ext_bytes,
				      tier_nvme_ext_off(t, g->first_ext),
				      l->call_id << 32 | (uint64_t)l->next << 1);
		if (rc == -EBUSY)
			break;
		if (rc < 0) {
			tn_group_done(t, l, l->next, rc);
			continue;
		}
		g->pending = true;
		l->inflight++;
		if (g->write)
			aio_submit(t->aio); /* start it while the next group is staged */
	}
	aio_submit(t->aio); /* an error here shows again in aio_reap */
}

/* Stage what the queue could not take yet: a started write no longer reads its units. */
static void tn_stage_rest(struct tier_nvme *t, struct tn_lane *l)
{
	for (uint32_t gi = l->next; gi < l->ng; gi++)
		tn_stage_group(t, l, &l->groups[gi]);
}

/* Run a lane's call to its end: 0 or -ETIMEDOUT (tn_timeout). */
static int tn_finish(struct tier_nvme *t, struct tn_lane *l)
{
	while (l->done < l->ng) {
		for (uint32_t i = 0; i < TN_LANES; i++)
			if (t->lanes[i].busy)
				tn_pump(t, &t->lanes[i]);
		if (l->done == l->ng)
			break;
		if (tn_reap(t, t->o.io_timeout_ms) <= 0)
			return tn_timeout(t, l);
	}
	return 0;
}

/* ---- calls ------------------------------------------------------------------------------ */

/*
 * A restore may read its unit straight into dst: the arena is registered (uring), the files
 * are O_DIRECT, and dst and the unit's length meet the files' alignment (the header block's
 * size is at least that alignment). Else it goes through staging and is copied.
 */
static bool tn_direct_ok(const struct tier_nvme *t, const void *dst)
{
	const uint8_t *d = dst, *a = t->o.arena;

	return t->direct_read && d >= a && d + t->o.unit_bytes <= a + t->o.arena_bytes &&
	       (uintptr_t)d % t->hdr_bytes == 0;
}

/* Cut staged slots [0, ns) into runs of consecutive extents of one file (direct reads alone). */
static uint32_t tn_make_groups(struct tier_nvme *t, struct tn_lane *l, uint32_t ns, bool write)
{
	uint32_t ng = 0;

	for (uint32_t k = 0; k < ns; k++) {
		struct tn_group *g = ng ? &l->groups[ng - 1] : NULL;
		uint64_t e = l->ext[k];
		bool direct = !write && tn_direct_ok(t, l->cur_r[l->slot_req[k]].dst);
		/* Runs are cut at max_io_bytes: several operations in flight beat one long one. */
		if (g && !direct && !g->direct && e == g->first_ext + g->n &&
		    e / t->per_file == g->file &&
		    (uint64_t)(g->n + 1) * t->ext_bytes <= t->o.max_io_bytes) {
			g->n++;
			continue;
		}
		l->groups[ng++] = (struct tn_group){.file = (uint32_t)(e / t->per_file),
						    .n = 1,
						    .first_ext = e,
						    .k0 = k,
						    .write = write,
						    .direct = direct};
	}
	return ng;
}

/* Allocate an extent for one request, honouring the degraded back-off. */
static int tn_write_alloc(struct tier_nvme *t, uint64_t *e)
{
	int rc;

	if (t->st.degraded && time_now_ms() < t->retry_ms)
		return -ENOSPC;
	rc = tn_ext_alloc(t, e);
	if (rc == -ENOSPC)
		tn_enospc(t, "fallocate");
	if (rc == -EDQUOT) /* every extent in use: full, not degraded */
		rc = -ENOSPC;
	return rc;
}

/* A free lane, or NULL (both busy, or a timed-out call's I/O still out: -EBUSY). */
static struct tn_lane *tn_lane_get(struct tier_nvme *t, int *rc)
{
	*rc = tier_nvme_io_drain(t);
	if (*rc < 0)
		return NULL;
	for (uint32_t i = 0; i < TN_LANES; i++)
		if (!t->lanes[i].busy && !t->lanes[i].stuck)
			return &t->lanes[i];
	*rc = -EBUSY;
	return NULL;
}

/* Start a call of n <= stage_ext requests on lane l: extents, groups, first submissions. */
static void tn_start(struct tier_nvme *t, struct tn_lane *l, struct tier_nvme_wreq *w,
		     struct tier_nvme_rreq *r, uint32_t n)
{
	uint32_t ns = 0;

	l->enospc_before = t->st.enospc_events;
	for (uint32_t j = 0; j < n; j++) {
		if (w) {
			w[j].res = tn_write_alloc(t, &w[j].extent);
			if (w[j].res < 0)
				continue;
			l->ext[ns] = w[j].extent;
		} else {
			uint64_t e = r[j].extent;
			r[j].dst_busy = false;
			r[j].res = e >= t->n_ext ? -EINVAL : !tn_ext_used(t, e) ? -ENOENT : 0;
			if (r[j].res < 0)
				continue;
			l->ext[ns] = e;
		}
		l->slot_req[ns++] = j; /* a write's units are staged group by group */
	}
	l->cur_w = w;
	l->cur_r = r;
	l->n_req = n;
	l->call_id = ++t->call_seq;
	l->ng = tn_make_groups(t, l, ns, w != NULL);
	l->next = l->done = l->inflight = 0;
	l->busy = true;
	if (w)
		t->st.write_ios += l->ng;
	else
		t->st.read_ios += l->ng;
	tn_pump(t, l);
	if (w)
		tn_stage_rest(t, l);
}

/* End a lane's call: wait for it, count. Returns stored / hit requests or -ETIMEDOUT. */
static int tn_end(struct tier_nvme *t, struct tn_lane *l)
{
	struct tier_nvme_wreq *w = l->cur_w;
	struct tier_nvme_rreq *r = l->cur_r;
	uint32_t ok = 0;
	int rc = tn_finish(t, l);

	if (rc < 0)
		return rc; /* tn_timeout answered the requests and released the lane */
	for (uint32_t j = 0; j < l->n_req; j++)
		ok += (w ? w[j].res : r[j].res) == 0;
	/* recovered: an attempt after the back-off stored units and met no ENOSPC */
	if (w && ok > 0 && t->st.enospc_events == l->enospc_before)
		tn_recovered(t);
	l->busy = false;
	l->cur_w = NULL;
	l->cur_r = NULL;
	return (int)ok;
}

/* Requests a failed call never reached get its error too. */
static int tn_fail_rest(struct tier_nvme_wreq *w, struct tier_nvme_rreq *r, uint32_t from,
			uint32_t n, int rc)
{
	for (uint32_t j = from; j < n; j++) {
		if (w) {
			w[j].res = rc;
		} else {
			r[j].res = rc;
			r[j].dst_busy = false; /* never started */
		}
	}
	return rc;
}

static bool tn_stuck(const struct tier_nvme *t)
{
	for (uint32_t i = 0; i < TN_LANES; i++)
		if (t->lanes[i].stuck)
			return true;
	return false;
}

/* End a lane's call and add its count to *done: 0 or -ETIMEDOUT. */
static int tn_end_count(struct tier_nvme *t, struct tn_lane *l, int *done)
{
	int k = tn_end(t, l);

	if (k < 0)
		return k;
	*done += k;
	return 0;
}

/*
 * Writes (w) or reads (r) of n units, one staging buffer's worth per lane: each chunk is
 * started before the one in flight is waited for. Returns the units stored or hit; the
 * requests after a failed chunk get its error (-EBUSY after a timeout: the timed-out I/O still
 * owns its staging buffer; a chunk started next to a timed-out one times out with it).
 */
static int tn_chunks(struct tier_nvme *t, struct tier_nvme_wreq *w, struct tier_nvme_rreq *r,
		     uint32_t n)
{
	struct tn_lane *prev = NULL;
	uint32_t i = 0;
	int rc = 0, done = 0;

	while (rc == 0 && i < n) {
		uint32_t m = n - i < t->stage_ext ? n - i : t->stage_ext;
		struct tn_lane *l = tn_lane_get(t, &rc);
		if (!l && prev && rc == -EBUSY && !tn_stuck(t)) {
			/* every lane is out (one with another caller's write): ours first */
			rc = tn_end_count(t, prev, &done);
			prev = NULL;
			if (rc == 0)
				l = tn_lane_get(t, &rc);
		}
		if (!l)
			break;
		tn_start(t, l, w ? w + i : NULL, w ? NULL : r + i, m);
		i += m;
		if (prev)
			rc = tn_end_count(t, prev, &done);
		prev = l;
	}
	if (prev) {
		if (rc == 0)
			rc = tn_end_count(t, prev, &done);
		else
			(void)tn_timeout(t, prev);
	}
	if (rc == -ETIMEDOUT) {
		tn_fail_rest(w, r, i, n, -EBUSY);
		return done;
	}
	if (rc < 0)
		return tn_fail_rest(w, r, i, n, rc);
	return done;
}

int tier_nvme_write(struct tier_nvme *t, struct tier_nvme_wreq *reqs, uint32_t n)
{
	return tn_chunks(t, reqs, NULL, n);
}

int tier_nvme_read(struct tier_nvme *t, struct tier_nvme_rreq *reqs, uint32_t n)
{
	return tn_chunks(t, NULL, reqs, n);
}

int tier_nvme_write_start(struct tier_nvme *t, struct tier_nvme_wreq *reqs, uint32_t n)
{
	struct tn_lane *l;
	int rc;

	if (n == 0 || n > t->stage_ext)
		return tn_fail_rest(reqs, NULL, 0, n, -EINVAL);
	l = tn_lane_get(t, &rc);
	if (!l)
		return tn_fail_rest(reqs, NULL, 0, n, rc);
	tn_start(t, l, reqs, NULL, n);
	return (int)(l - t->lanes);
}

int tier_nvme_write_wait(struct tier_nvme *t, int handle)
{
	if (handle < 0 || (uint32_t)handle >= TN_LANES || !t->lanes[handle].busy ||
	    !t->lanes[handle].cur_w)
		return -EINVAL;
	return tn_end(t, &t->lanes[handle]);
}

uint32_t tier_nvme_batch_units(const struct tier_nvme *t)
{
	return t->stage_ext;
}
