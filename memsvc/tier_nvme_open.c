/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The NVMe tier's set-up and teardown: spill files (created, O_DIRECT where the filesystem
 * takes it, preallocated), the header block size, tables, aio with its fixed buffers, and the
 * getters. The I/O paths are in tier_nvme.c.
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

#include "err.h"
#include "log.h"
#include "shm_abi.h"
#include "tier_nvme_internal.h"

static _Atomic bool tn_arena_warned; /* the arena's registration failure is logged once */

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
	if (!t->bitmap)
		return -ENOMEM;
	if (posix_memalign((void **)&t->stage, TIER_NVME_ALIGN,
			   TN_LANES * t->stage_ext * t->ext_bytes))
		return -ENOMEM;
	for (uint32_t i = 0; i < TN_LANES; i++) {
		struct tn_lane *l = &t->lanes[i];
		l->stage = t->stage + (uint64_t)i * t->stage_ext * t->ext_bytes;
		l->groups = calloc(t->stage_ext, sizeof(*l->groups));
		l->slot_req = calloc(t->stage_ext, sizeof(*l->slot_req));
		l->ext = calloc(t->stage_ext, sizeof(*l->ext));
		if (!l->groups || !l->slot_req || !l->ext)
			return -ENOMEM;
	}
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
	aio_buffers_register(t->aio, t->stage, TN_LANES * t->stage_ext * t->ext_bytes);
	if (!t->o.arena)
		return 0;
	rc = aio_buffers_register(t->aio, t->o.arena, t->o.arena_bytes);
	t->arena_reg = rc == 0 && aio_has_fixed_buffers(t->aio);
	/* once per process: every session of a daemon meets the same limit (stats say which) */
	if (rc < 0 && !atomic_exchange(&tn_arena_warned, true))
		log_warn(TN_TAG, "arena not registered for spill I/O: restores go through staging",
			 "aio=%s error=%s arena_bytes=%zu", aio_backend_name(t->aio), err_name(rc),
			 t->o.arena_bytes);
	/* direct reads need O_DIRECT lengths (a unit of whole header blocks) and room for both
	 * parts of a read in the queue */
	t->direct_read = t->arena_reg && t->direct && !t->o.no_direct_read &&
			 t->o.unit_bytes % t->hdr_bytes == 0 && t->o.queue_depth >= 2;
	t->st.arena_registered = t->arena_reg;
	return 0;
}

static const char *tn_arena_state(const struct tier_nvme *t)
{
	if (!t->o.arena)
		return "none";
	return t->arena_reg ? "registered" : "unregistered";
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
		rc = tier_nvme_file_reserve(t, (uint64_t)i * t->per_file);
	if (rc == 0)
		rc = tn_open_aio(t);
	if (rc < 0)
		goto out_free;
	log_info(TN_TAG, "spill tier open",
		 "aio=%s direct=%s files=%u extents=%llu extent_bytes=%llu header_bytes=%u "
		 "arena=%s direct_restore=%s",
		 aio_backend_name(t->aio), t->direct ? "yes" : "no(filesystem refused O_DIRECT)",
		 t->n_files, (unsigned long long)t->n_ext, (unsigned long long)t->ext_bytes,
		 t->hdr_bytes, tn_arena_state(t), t->direct_read ? "yes" : "no");
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
	for (uint32_t i = 0; i < TN_LANES; i++) {
		free(t->lanes[i].groups);
		free(t->lanes[i].slot_req);
		free(t->lanes[i].ext);
	}
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

bool tier_nvme_direct_read(const struct tier_nvme *t)
{
	return t->direct_read;
}

bool tier_nvme_stuck(struct tier_nvme *t)
{
	return tier_nvme_io_drain(t) < 0;
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
	*off = tier_nvme_ext_off(t, extent);
	return 0;
}
