/* SPDX-License-Identifier: Apache-2.0 */
/*
 * NVMe tier storage: spill files, the extent bitmap, and batched writes / verified reads
 * through a staging buffer (registered as aio fixed buffers) so that a unit reaches the
 * caller only after its header and CRC32C checked out. See tier_nvme.h for the contract.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "err.h"
#include "log.h"
#include "shm_abi.h"
#include "tier_nvme.h"
#include "timeutil.h"

#define TN_TAG "tier_nvme"
#define TN_MAX_DIRS 16u
#define TN_MAX_FILES 64u

struct tn_file {
	int fd;
	char *path;
	bool unlinked;	      /* opts.unlink_early: the name is gone already */
	uint64_t alloc_bytes; /* fallocated (or truncated) so far */
};

/* One aio operation of a call: a run of consecutive extents of one file. */
struct tn_group {
	uint32_t file, n;
	uint64_t first_ext;
	uint32_t k0; /* first staging slot */
	bool write;
	bool staged;  /* write: its units are in the staging buffer */
	bool pending; /* submitted, completion not reaped */
};

struct tier_nvme {
	struct tier_nvme_opts o;
	struct tn_file *files;
	uint32_t n_files;
	bool direct;
	struct aio *aio;
	uint32_t hdr_bytes; /* header block: the files' direct-I/O alignment, 512 B to 4 KiB */
	uint64_t ext_bytes, per_file, n_ext;
	uint64_t *bitmap, hint;
	uint8_t *stage;
	uint32_t stage_ext; /* extents that fit in the staging buffer */
	struct tn_group *groups;
	uint32_t *slot_req; /* staging slot -> request index of the current call */
	uint64_t *chunk_ext; /* [stage_ext] extents of the chunk being staged */
	struct tier_nvme_wreq *cur_w;
	struct tier_nvme_rreq *cur_r;
	uint64_t call_id;  /* tags: call_id << 32 | group index */
	bool stuck;	   /* a timed-out call's I/O still owns the staging buffer */
	uint64_t retry_ms; /* degraded: earliest next attempt */
	struct tier_nvme_stats st;
};

/* ---- extents ---------------------------------------------------------------------------- */

static int tn_run_groups(struct tier_nvme *t, uint32_t ng);

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
static int tn_file_reserve(struct tier_nvme *t, uint64_t e)
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
		rc = tn_file_reserve(t, e);
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

static uint64_t tn_ext_off(const struct tier_nvme *t, uint64_t e)
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

static uint8_t *tn_slot(const struct tier_nvme *t, uint32_t k)
{
	return t->stage + (uint64_t)k * t->ext_bytes;
}

static uint32_t tn_crc(const struct tier_nvme_hdr *h, const uint8_t *data, uint32_t len)
{
	struct tier_nvme_hdr c = *h;

	c.crc = 0;
	return crc32c(crc32c(0, &c, sizeof(c)), data, len);
}

static void tn_stage_unit(struct tier_nvme *t, uint32_t k, const struct tier_nvme_key *key,
			  uint64_t e, const void *unit)
{
	uint8_t *blk = tn_slot(t, k);
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

/* 0 when the staged extent is the unit asked for, else -EBADMSG with the counter moved. */
static int tn_verify(struct tier_nvme *t, uint32_t k, const struct tier_nvme_key *key, uint64_t e)
{
	const uint8_t *blk = tn_slot(t, k);
	struct tier_nvme_hdr h;

	memcpy(&h, blk, sizeof(h));
	if (h.crc != tn_crc(&h, blk + t->hdr_bytes, t->o.unit_bytes)) {
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

static void tn_write_done(struct tier_nvme *t, struct tn_group *g, int res)
{
	uint64_t len = (uint64_t)g->n * t->ext_bytes;

	if (res >= 0 && (uint64_t)res == len) {
		t->st.units_written += g->n;
		t->st.bytes_written += len;
	} else if (res == -ENOSPC) {
		tn_enospc(t, "write");
	} else if (res != -ETIMEDOUT) {
		t->st.io_errors++;
	}
	for (uint32_t m = 0; m < g->n; m++) {
		struct tier_nvme_wreq *w = t->cur_w ? &t->cur_w[t->slot_req[g->k0 + m]] : NULL;
		bool ok = res >= 0 && (uint64_t)res == len;
		if (!ok)
			tier_nvme_extent_free(t, g->first_ext + m);
		if (w)
			w->res = ok ? 0 : res < 0 ? res : -EIO;
	}
}

static void tn_read_done(struct tier_nvme *t, struct tn_group *g, int res)
{
	uint64_t len = (uint64_t)g->n * t->ext_bytes;
	bool ok = res >= 0 && (uint64_t)res == len;

	if (!t->cur_r)
		return;
	if (!ok && res != -ETIMEDOUT)
		t->st.io_errors++;
	if (ok)
		t->st.bytes_read += len;
	for (uint32_t m = 0; m < g->n; m++) {
		struct tier_nvme_rreq *r = &t->cur_r[t->slot_req[g->k0 + m]];
		if (!ok) {
			r->res = res < 0 ? res : -EIO;
			continue;
		}
		r->res = tn_verify(t, g->k0 + m, &r->key, g->first_ext + m);
		if (r->res == 0) {
			memcpy(r->dst, tn_slot(t, g->k0 + m) + t->hdr_bytes, t->o.unit_bytes);
			t->st.units_read++;
		}
	}
}

static void tn_group_done(struct tier_nvme *t, uint32_t gi, int res)
{
	struct tn_group *g = &t->groups[gi];

	g->pending = false;
	if (g->write)
		tn_write_done(t, g, res);
	else
		tn_read_done(t, g, res);
}

/* An earlier call timed out: collect what finished since, without waiting. 0 or -EBUSY. */
static int tn_drain(struct tier_nvme *t)
{
	struct aio_cqe c[16];
	int got;

	if (!t->stuck)
		return 0;
	t->cur_w = NULL; /* that call's requests are gone; only its extents are ours */
	t->cur_r = NULL;
	while ((got = aio_reap(t->aio, c, 16, 0)) > 0) {
		for (int i = 0; i < got; i++) {
			uint32_t gi = (uint32_t)c[i].tag;
			if (c[i].tag >> 32 == t->call_id && gi < t->stage_ext &&
			    t->groups[gi].pending)
				tn_group_done(t, gi, -ETIMEDOUT);
		}
	}
	if (aio_inflight(t->aio) > 0)
		return -EBUSY;
	t->stuck = false;
	return 0;
}

/* Time out: what never started fails now; what is in flight keeps the staging buffer. */
static int tn_timeout(struct tier_nvme *t, uint32_t next, uint32_t ng)
{
	for (uint32_t gi = 0; gi < ng; gi++) {
		struct tn_group *g = &t->groups[gi];
		if (gi >= next) {
			tn_group_done(t, gi, -ETIMEDOUT);
			continue;
		}
		if (!g->pending)
			continue;
		for (uint32_t m = 0; m < g->n; m++) {
			uint32_t j = t->slot_req[g->k0 + m];
			if (g->write)
				t->cur_w[j].res = -ETIMEDOUT;
			else
				t->cur_r[j].res = -ETIMEDOUT;
		}
	}
	t->st.io_errors++;
	t->stuck = true;
	log_warn(TN_TAG, "spill I/O timed out", "in_flight=%u timeout_ms=%d", aio_inflight(t->aio),
		 t->o.io_timeout_ms);
	return -ETIMEDOUT;
}

/*
 * Copy a write group's units (header, CRC32C) into its staging slots just before it is
 * submitted, so staging the next group overlaps the I/O of the ones before it.
 */
static void tn_stage_group(struct tier_nvme *t, struct tn_group *g)
{
	if (!g->write || g->staged || !t->cur_w)
		return;
	for (uint32_t m = 0; m < g->n; m++) {
		const struct tier_nvme_wreq *w = &t->cur_w[t->slot_req[g->k0 + m]];
		tn_stage_unit(t, g->k0 + m, &w->key, g->first_ext + m, w->unit);
	}
	g->staged = true;
}

static int tn_run_groups(struct tier_nvme *t, uint32_t ng)
{
	uint32_t next = 0, done = 0;
	struct aio_cqe c[16];

	t->call_id++;
	while (done < ng) {
		for (; next < ng; next++) {
			struct tn_group *g = &t->groups[next];
			tn_stage_group(t, g);
			int rc = aio_prep(t->aio, g->write ? AIO_OP_WRITE : AIO_OP_READ, g->file,
					  tn_slot(t, g->k0), (size_t)g->n * t->ext_bytes,
					  tn_ext_off(t, g->first_ext), t->call_id << 32 | next);
			if (rc == -EBUSY)
				break;
			g->pending = rc == 0;
			if (rc < 0) {
				tn_group_done(t, next, rc);
				done++;
			} else if (g->write) {
				aio_submit(t->aio); /* start it while the next group is staged */
			}
		}
		aio_submit(t->aio); /* an error here shows again in aio_reap */
		if (done == ng)
			break;
		int got = aio_reap(t->aio, c, 16, t->o.io_timeout_ms);
		if (got <= 0)
			return tn_timeout(t, next, ng);
		for (int i = 0; i < got; i++) {
			uint32_t gi = (uint32_t)c[i].tag;
			if (c[i].tag >> 32 != t->call_id || gi >= ng || !t->groups[gi].pending)
				continue;
			tn_group_done(t, gi, c[i].res);
			done++;
		}
	}
	return 0;
}

/* ---- calls ------------------------------------------------------------------------------ */

/* Cut staged slots [0, ns) into runs of consecutive extents of one file. */
static uint32_t tn_make_groups(struct tier_nvme *t, const uint64_t *ext, uint32_t ns, bool write)
{
	uint32_t ng = 0;

	for (uint32_t k = 0; k < ns; k++) {
		struct tn_group *g = ng ? &t->groups[ng - 1] : NULL;
		/* Runs are cut at max_io_bytes: several operations in flight beat one long one. */
		if (g && ext[k] == g->first_ext + g->n && ext[k] / t->per_file == g->file &&
		    (uint64_t)(g->n + 1) * t->ext_bytes <= t->o.max_io_bytes) {
			g->n++;
			continue;
		}
		t->groups[ng++] = (struct tn_group){.file = (uint32_t)(ext[k] / t->per_file),
						    .n = 1,
						    .first_ext = ext[k],
						    .k0 = k,
						    .write = write};
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

static int tn_write_chunk(struct tier_nvme *t, struct tier_nvme_wreq *reqs, uint32_t n,
			  uint64_t *ext)
{
	uint64_t enospc_before = t->st.enospc_events;
	uint32_t ns = 0, stored = 0;
	int rc;

	for (uint32_t j = 0; j < n; j++) {
		reqs[j].res = tn_write_alloc(t, &reqs[j].extent);
		if (reqs[j].res < 0)
			continue;
		t->slot_req[ns] = j; /* staged by tn_run_groups, group by group */
		ext[ns++] = reqs[j].extent;
	}
	t->cur_w = reqs;
	t->cur_r = NULL;
	uint32_t ng = tn_make_groups(t, ext, ns, true);
	t->st.write_ios += ng;
	rc = tn_run_groups(t, ng);
	for (uint32_t j = 0; j < n; j++)
		stored += reqs[j].res == 0;
	/* recovered: an attempt after the back-off stored units and met no ENOSPC */
	if (stored > 0 && t->st.enospc_events == enospc_before)
		tn_recovered(t);
	return rc < 0 ? rc : (int)stored;
}

/* Requests a failed call never reached get its error too. */
static int tn_fail_rest(struct tier_nvme_wreq *w, struct tier_nvme_rreq *r, uint32_t from,
			uint32_t n, int rc)
{
	for (uint32_t j = from; j < n; j++) {
		if (w)
			w[j].res = rc;
		else
			r[j].res = rc;
	}
	return rc;
}

static int tn_read_chunk(struct tier_nvme *t, struct tier_nvme_rreq *reqs, uint32_t n,
			 uint64_t *ext)
{
	uint32_t ns = 0, hits = 0;
	int rc;

	for (uint32_t j = 0; j < n; j++) {
		uint64_t e = reqs[j].extent;
		reqs[j].res = e >= t->n_ext ? -EINVAL : !tn_ext_used(t, e) ? -ENOENT : 0;
		if (reqs[j].res < 0)
			continue;
		t->slot_req[ns] = j;
		ext[ns++] = e;
	}
	t->cur_w = NULL;
	t->cur_r = reqs;
	uint32_t ng = tn_make_groups(t, ext, ns, false);
	t->st.read_ios += ng;
	rc = tn_run_groups(t, ng);
	t->cur_r = NULL;
	for (uint32_t j = 0; j < n; j++)
		hits += reqs[j].res == 0;
	return rc < 0 ? rc : (int)hits;
}

/*
 * Writes (w) or reads (r) of n units, one staging buffer's worth at a time. Returns the units
 * stored or hit; the requests after a failed chunk get its error (-EBUSY after a timeout: the
 * timed-out I/O still owns the staging buffer).
 */
static int tn_chunks(struct tier_nvme *t, struct tier_nvme_wreq *w, struct tier_nvme_rreq *r,
		     uint32_t n)
{
	int rc = tn_drain(t), done = 0;
	uint32_t i = 0;

	for (; rc == 0 && i < n; i += t->stage_ext) {
		uint32_t m = n - i < t->stage_ext ? n - i : t->stage_ext;
		rc = w ? tn_write_chunk(t, w + i, m, t->chunk_ext)
		       : tn_read_chunk(t, r + i, m, t->chunk_ext);
		done += rc > 0 ? rc : 0;
		rc = rc < 0 ? rc : 0;
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

/* ---- open / free ------------------------------------------------------------------------ */

/* Create one spill file; O_DIRECT unless the filesystem refuses it (or opts say no). */
static int tn_file_create(struct tier_nvme *t, const char *dir, struct tn_file *f)
{
	size_t len = strlen(dir) + 32;
	int fd;

	f->path = malloc(len);
	if (!f->path)
		return -ENOMEM;
	snprintf(f->path, len, "%s/sparda-spill-XXXXXX", dir);
	fd = mkostemp(f->path, O_CLOEXEC);
	if (fd < 0)
		return err_from_errno();
	f->fd = fd;
	if (t->direct) {
		fd = open(f->path, O_RDWR | O_CLOEXEC | O_DIRECT);
		if (fd >= 0) {
			close(f->fd);
			f->fd = fd;
		} else if (errno == EINVAL) {
			t->direct = false; /* tmpfs and some others: buffered, said at open */
		} else {
			return err_from_errno();
		}
	}
	if (t->o.unlink_early && unlink(f->path) == 0)
		f->unlinked = true;
	return 0;
}

/*
 * The header block's size when opts leave it to the files: the largest of their direct-I/O
 * alignments (file offset and memory) and their filesystem block sizes, at least 512 B and at
 * most TIER_NVME_ALIGN. Block size matters as much as the disk's sector: ext4 and XFS run
 * direct writes that do not cover whole blocks one at a time, which cost more than half the
 * write rate on a 2-core ext4 VM with 512 B headers. So a filesystem of 4 KiB blocks keeps
 * 4 KiB headers (12.5% of a 32 KiB unit's extent) and only one of 512 B blocks gets 512 B
 * (1.5%). Without O_DIRECT, or where the kernel does not say (no STATX_DIOALIGN), 4 KiB.
 */
static uint32_t tn_header_bytes(const struct tier_nvme *t)
{
	uint32_t want = 512;

	if (t->o.header_bytes)
		return t->o.header_bytes;
	if (!t->direct)
		return TIER_NVME_ALIGN;
#ifdef STATX_DIOALIGN
	for (uint32_t i = 0; i < t->n_files; i++) {
		struct statx sx;
		uint32_t a[3];

		if (statx(t->files[i].fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) != 0 ||
		    !(sx.stx_mask & STATX_DIOALIGN) || sx.stx_dio_offset_align == 0)
			return TIER_NVME_ALIGN;
		a[0] = sx.stx_dio_offset_align;
		a[1] = sx.stx_dio_mem_align;
		a[2] = sx.stx_blksize;
		for (int k = 0; k < 3; k++) {
			if (a[k] > TIER_NVME_ALIGN || (a[k] & (a[k] - 1)))
				return TIER_NVME_ALIGN;
			want = a[k] > want ? a[k] : want;
		}
	}
	return want;
#else
	return TIER_NVME_ALIGN;
#endif
}

static int tn_opts_check(struct tier_nvme_opts *o)
{
	if (!o->dirs || o->n_dirs == 0 || o->n_dirs > TN_MAX_DIRS || o->unit_bytes == 0 ||
	    o->unit_bytes > SP_MAX_UNIT_BYTES)
		return -EINVAL;
	if (o->files_per_dir == 0)
		o->files_per_dir = 1;
	if ((uint64_t)o->files_per_dir * o->n_dirs > TN_MAX_FILES)
		return -EINVAL;
	if (o->header_bytes && (o->header_bytes < 512 || o->header_bytes > TIER_NVME_ALIGN ||
				(o->header_bytes & (o->header_bytes - 1))))
		return -EINVAL;
	if (o->grow_bytes == 0)
		o->grow_bytes = 64ull << 20;
	if (o->batch_bytes == 0)
		o->batch_bytes = 4u << 20;
	if (o->max_io_bytes == 0)
		o->max_io_bytes = 1u << 20;
	if (o->queue_depth == 0)
		o->queue_depth = 64;
	if (o->backoff_ms == 0)
		o->backoff_ms = 1000;
	if (o->io_timeout_ms == 0)
		o->io_timeout_ms = 30000;
	return 0;
}

/* Sizes, bitmap, staging; the files are open (their alignment sets the header's size). */
static int tn_alloc_tables(struct tier_nvme *t)
{
	uint64_t h = t->hdr_bytes = tn_header_bytes(t);

	t->ext_bytes = h + ((uint64_t)t->o.unit_bytes + h - 1) / h * h;
	t->per_file = t->o.file_bytes / t->ext_bytes;
	if (t->per_file == 0)
		return -EINVAL;
	t->n_ext = t->per_file * t->n_files;
	t->st.extents_total = t->n_ext;
	t->stage_ext = (uint32_t)(t->o.batch_bytes / t->ext_bytes);
	if (t->stage_ext == 0)
		t->stage_ext = 1;
	t->bitmap = calloc((t->n_ext + 63) / 64, sizeof(*t->bitmap));
	t->groups = calloc(t->stage_ext, sizeof(*t->groups));
	t->slot_req = calloc(t->stage_ext, sizeof(*t->slot_req));
	t->chunk_ext = calloc(t->stage_ext, sizeof(*t->chunk_ext));
	if (!t->bitmap || !t->groups || !t->slot_req || !t->chunk_ext)
		return -ENOMEM;
	if (posix_memalign((void **)&t->stage, TIER_NVME_ALIGN, t->stage_ext * t->ext_bytes))
		return -ENOMEM;
	return 0;
}

static int tn_open_aio(struct tier_nvme *t)
{
	int fds[TN_MAX_FILES];
	struct aio_opts ao = {.depth = t->o.queue_depth,
			      .fds = fds,
			      .n_fds = t->n_files,
			      .sqpoll = t->o.sqpoll,
			      .fault = t->o.fault};
	int rc;

	for (uint32_t i = 0; i < t->n_files; i++)
		fds[i] = t->files[i].fd;
	rc = aio_open(t->o.aio_kind, &ao, &t->aio);
	if (rc < 0)
		return rc;
	/* fixed buffers are an optimisation: without them (RLIMIT_MEMLOCK) I/O still works */
	aio_buffers_register(t->aio, t->stage, t->stage_ext * t->ext_bytes);
	return 0;
}

int tier_nvme_open(const struct tier_nvme_opts *o, struct tier_nvme **out)
{
	struct tier_nvme *t;
	int rc;

	if (!o || !out)
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->o = *o;
	t->direct = !o->no_direct;
	rc = tn_opts_check(&t->o);
	if (rc == 0) {
		t->n_files = t->o.n_dirs * t->o.files_per_dir;
		t->files = calloc(t->n_files, sizeof(*t->files));
		rc = t->files ? 0 : -ENOMEM;
	}
	for (uint32_t i = 0; rc == 0 && i < t->n_files; i++)
		t->files[i].fd = -1;
	for (uint32_t i = 0; rc == 0 && i < t->n_files; i++)
		rc = tn_file_create(t, t->o.dirs[i / t->o.files_per_dir], &t->files[i]);
	if (rc == 0)
		rc = tn_alloc_tables(t);
	for (uint32_t i = 0; rc == 0 && i < t->n_files; i++)
		rc = tn_file_reserve(t, (uint64_t)i * t->per_file);
	if (rc == 0)
		rc = tn_open_aio(t);
	if (rc < 0)
		goto out_free;
	log_info(TN_TAG, "spill tier open",
		 "aio=%s direct=%s files=%u extents=%llu extent_bytes=%llu header_bytes=%u",
		 aio_backend_name(t->aio), t->direct ? "yes" : "no(filesystem refused O_DIRECT)",
		 t->n_files, (unsigned long long)t->n_ext, (unsigned long long)t->ext_bytes,
		 t->hdr_bytes);
	*out = t;
	return 0;
out_free:
	tier_nvme_free(t);
	return rc;
}

void tier_nvme_free(struct tier_nvme *t)
{
	if (!t)
		return;
	aio_free(t->aio); /* waits for I/O still using the staging buffer */
	for (uint32_t i = 0; t->files && i < t->n_files; i++) {
		if (t->files[i].fd >= 0)
			close(t->files[i].fd);
		if (t->files[i].path && t->files[i].fd >= 0 && !t->files[i].unlinked)
			unlink(t->files[i].path);
		free(t->files[i].path);
	}
	free(t->files);
	free(t->bitmap);
	free(t->groups);
	free(t->slot_req);
	free(t->chunk_ext);
	free(t->stage);
	free(t);
}

/* ---- getters ---------------------------------------------------------------------------- */

void tier_nvme_get_stats(const struct tier_nvme *t, struct tier_nvme_stats *s)
{
	*s = t->st;
}

const char *tier_nvme_aio_name(const struct tier_nvme *t)
{
	return aio_backend_name(t->aio);
}

bool tier_nvme_direct(const struct tier_nvme *t)
{
	return t->direct;
}

uint64_t tier_nvme_extent_bytes(const struct tier_nvme *t)
{
	return t->ext_bytes;
}

uint32_t tier_nvme_header_bytes(const struct tier_nvme *t)
{
	return t->hdr_bytes;
}

int tier_nvme_extent_locate(const struct tier_nvme *t, uint64_t extent, char *path, size_t cap,
			    uint64_t *off)
{
	const char *p;

	if (extent >= t->n_ext || !path || !off)
		return -EINVAL;
	p = t->files[extent / t->per_file].path;
	if (strlen(p) >= cap)
		return -ENAMETOOLONG;
	strcpy(path, p);
	*off = tn_ext_off(t, extent);
	return 0;
}
