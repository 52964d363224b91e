/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The spill thread: for each tiered session, release dropped extents, restore what Forecasts
 * asked for (answers posted as each batch lands), then evict past the high watermark. All
 * tier I/O happens here, without session locks; the store re-checks every unit afterwards.
 */
#include "spill.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "aio_fault.h"
#include "err.h"
#include "log.h"
#include "session.h"
#include "tier_nvme.h"

#define TAG "spill"
#define SPILL_MAX_BATCH 1024u /* units per restore or eviction batch, at most */
#define SPILL_MIN_BATCH 16u
#define SPILL_IDLE_MS 20
#define SPILL_LOAD_ROUNDS 8
#define SPILL_EVICT_ROUNDS 8 /* eviction batches per visit, each started before the last ends */

/* One eviction batch: picked units, their write requests, the tier's handle. */
struct wbatch {
	struct store_io *io;
	struct tier_nvme_wreq *w;
	uint32_t k;
	int handle; /* tier_nvme_write_start's, or its error */
	uint64_t t0;
};

struct entry {
	struct session *s;
	struct tier_nvme *tier;
	uint64_t file_bytes;
	bool busy, removing, degraded;
	struct tier_nvme_stats tst; /* last copy, for spill_get_stats */
	uint32_t batch;		    /* units per restore batch */
	uint32_t wbatch;	    /* units per eviction batch: what one staging lane holds */
	uint64_t ext_bytes;	    /* of the tier's extents */
	uint64_t starve_since_ms;   /* restores queued without progress since (0: not) */
	struct store_io *io;	    /* restores */
	struct tier_nvme_rreq *r;
	struct store_io *held;	    /* timed-out direct restores: the I/O still owns the slots */
	uint32_t n_held;
	struct wbatch wb[2];	    /* evictions: one in flight while the next is started */
	uint64_t *ext;
};

struct spill {
	struct spill_opts o;
	char dirs_buf[1024];
	const char *dirs[SPILL_MAX_DIRS];
	uint32_t n_dirs;
	struct aio_fault *fault;
	int efd;
	pthread_t thread;
	bool started;
	_Atomic bool stop;
	pthread_mutex_t lock; /* ents[], reserved, st, closed */
	pthread_cond_t idle;
	struct entry **ents;
	size_t n_ents, cap_ents;
	uint64_t reserved;	       /* per directory */
	struct spill_stats st;	       /* the thread's own counters */
	struct tier_nvme_stats closed; /* sums of removed tiers */
	char aio_name[24];
};

/* ---- the thread ------------------------------------------------------------------------- */

static struct tier_nvme_key key_of(struct session *s, const struct store_io *x)
{
	return (struct tier_nvme_key){.session = session_id(s),
				      .seq = x->seq,
				      .layer = x->layer,
				      .head = x->head,
				      .block = x->block,
				      .gen = x->gen};
}

static void release_extents(struct entry *e)
{
	uint32_t k;

	while ((k = session_ext_take(e->s, e->ext, e->batch)) > 0)
		for (uint32_t i = 0; i < k; i++)
			(void)tier_nvme_extent_free(e->tier, e->ext[i]);
}

static void answer(struct spill *sp, struct entry *e)
{
	struct session_tier_done d;

	(void)session_waiters_complete(e->s, &d);
	if (!d.answered)
		return;
	pthread_mutex_lock(&sp->lock);
	sp->st.answers_deferred += d.answered;
	sp->st.answers_late += d.late;
	for (uint32_t i = 0; i < d.n_latency; i++)
		hist_add(&sp->st.restore_ns, d.latency_ns[i]);
	pthread_mutex_unlock(&sp->lock);
}

/*
 * Timed-out direct restores whose I/O is over: their units are lost (misses) and their slots
 * go back now. True while some are still held (the I/O may still write their slots).
 */
static bool release_held(struct entry *e)
{
	if (!e->n_held)
		return false;
	if (tier_nvme_stuck(e->tier))
		return true;
	(void)session_load_done(e->s, e->held, e->n_held);
	e->n_held = 0;
	return false;
}

/*
 * Hand a batch's results to the store, except restores whose slot a timed-out direct read
 * still owns: those wait in e->held (the slot is neither published nor reused meanwhile).
 */
static void restore_done(struct entry *e, uint32_t k)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < k; i++) {
		if (e->r[i].dst_busy && e->n_held < e->batch)
			e->held[e->n_held++] = e->io[i];
		else
			e->io[n++] = e->io[i];
	}
	(void)session_load_done(e->s, e->io, n);
}

/*
 * One batch of restores; false when none was queued or none could get a slot. The slots are
 * free ones taken for the restore (LOADING, readable by nobody) and published only for res 0
 * (store_load_done): a direct read may leave unverified bytes in a miss's slot, which goes
 * back to the free list unread.
 */
static bool restore_batch(struct spill *sp, struct entry *e)
{
	size_t ub = session_geometry(e->s)->unit_bytes;
	uint8_t *arena = session_arena_base(e->s);
	uint32_t k, ok = 0;
	uint64_t t0 = time_now_ns();
	int rc;

	/*
	 * A timed-out call's I/O is still in flight (it may own a staging buffer, or slots of a
	 * direct read): queued restores wait, their units staying on disk, rather than fail with
	 * -EBUSY and be lost; and no second batch can be held behind the first.
	 */
	if (release_held(e) || tier_nvme_stuck(e->tier))
		return false;
	k = session_load_pick(e->s, e->io, e->batch);
	if (!k)
		return false;
	for (uint32_t i = 0; i < k; i++)
		e->r[i] = (struct tier_nvme_rreq){.key = key_of(e->s, &e->io[i]),
						  .extent = e->io[i].extent,
						  .dst = arena + (size_t)e->io[i].slot * ub};
	rc = tier_nvme_read(e->tier, e->r, k);
	for (uint32_t i = 0; i < k; i++) {
		e->io[i].res = rc < 0 ? rc : e->r[i].res;
		ok += e->io[i].res == 0;
	}
	restore_done(e, k);
	if (ok < k)
		log_warn(TAG, "restore failed: units lost (misses, never wrong bytes)",
			 "session=%llu units=%u first_error=%s",
			 (unsigned long long)session_id(e->s), k - ok,
			 err_name(rc < 0	? rc
				  : e->r[0].res ? e->r[0].res
						: -EIO));
	pthread_mutex_lock(&sp->lock);
	sp->st.units_restored += ok;
	sp->st.bytes_restored += (uint64_t)ok * ub;
	sp->st.restore_misses += k - ok;
	hist_add(&sp->st.read_ns, time_now_ns() - t0);
	/* the tier's counters (crc, identity) too, before the answers: a client that reads the
	 * stats after its answer sees this batch in them */
	tier_nvme_get_stats(e->tier, &e->tst);
	pthread_mutex_unlock(&sp->lock);
	answer(sp, e);
	return true;
}

/*
 * Pick an eviction batch into b and start its write (the units are staged before it returns).
 * Returns the units dropped (already on disk: their slots go back without a write); b->k is
 * the batch being written (0: nothing was wanted, or the tier is degraded and waiting).
 */
static uint32_t evict_start(struct spill *sp, struct entry *e, struct wbatch *b)
{
	size_t ub = session_geometry(e->s)->unit_bytes;
	uint8_t *arena = session_arena_base(e->s);
	uint32_t dropped = 0;

	b->k = session_evict_pick(e->s, b->io, e->wbatch, &dropped);
	if (dropped) {
		pthread_mutex_lock(&sp->lock);
		sp->st.units_dropped += dropped;
		pthread_mutex_unlock(&sp->lock);
	}
	if (!b->k)
		return dropped;
	for (uint32_t i = 0; i < b->k; i++)
		b->w[i] = (struct tier_nvme_wreq){.key = key_of(e->s, &b->io[i]),
						  .unit = arena + (size_t)b->io[i].slot * ub};
	b->t0 = time_now_ns();
	/* -EBUSY (a hung earlier write still owns a staging lane) fails the batch: every request
	 * has the error and the units stay in RAM */
	b->handle = tier_nvme_write_start(e->tier, b->w, b->k);
	return dropped;
}

/* Wait for b's write, hand the results to the store, count. Returns the units stored. */
static uint32_t evict_finish(struct spill *sp, struct entry *e, struct wbatch *b)
{
	size_t ub = session_geometry(e->s)->unit_bytes;
	uint32_t ok = 0;

	if (b->handle >= 0)
		(void)tier_nvme_write_wait(e->tier, b->handle); /* every request has its res */
	for (uint32_t i = 0; i < b->k; i++) {
		b->io[i].res = b->w[i].res;
		b->io[i].extent = b->w[i].extent;
		ok += b->io[i].res == 0;
	}
	(void)session_evict_done(e->s, b->io, b->k);
	pthread_mutex_lock(&sp->lock);
	sp->st.units_spilled += ok;
	sp->st.bytes_spilled += (uint64_t)ok * ub;
	sp->st.spill_failures += b->k - ok;
	if (ok)
		hist_add(&sp->st.spill_ns, time_now_ns() - b->t0);
	pthread_mutex_unlock(&sp->lock);
	b->k = 0;
	return ok;
}

/*
 * Evict in batches while the store wants it (at most SPILL_EVICT_ROUNDS): batch n+1 is picked,
 * staged and submitted while batch n's write is on the disk, so the disk does not wait for
 * the CPU between batches; restores queued meanwhile go on the lane batch n freed. True when
 * something moved (units stored or dropped; a batch whose writes all failed moved nothing).
 */
static bool evict(struct spill *sp, struct entry *e)
{
	struct wbatch *cur = &e->wb[0], *out = NULL;
	uint64_t t0 = 0;
	bool moved = false;

	for (int round = 0; round < SPILL_EVICT_ROUNDS; round++) {
		uint32_t dropped = evict_start(sp, e, cur);
		bool failed = false;
		if (cur->k && !t0)
			t0 = cur->t0;
		moved |= dropped != 0;
		if (out) {
			failed = evict_finish(sp, e, out) == 0;
			moved |= !failed;
			out = NULL;
			(void)restore_batch(sp, e);
		}
		if (cur->k) {
			out = cur;
			cur = cur == &e->wb[0] ? &e->wb[1] : &e->wb[0];
		}
		/* nothing wanted, or writes failing (ENOSPC, EIO): no more batches this visit */
		if ((!out && !dropped) || failed)
			break;
	}
	if (out)
		moved |= evict_finish(sp, e, out) != 0;
	if (t0) {
		pthread_mutex_lock(&sp->lock);
		sp->st.spill_busy_ns += time_now_ns() - t0;
		pthread_mutex_unlock(&sp->lock);
	}
	return moved;
}

/* All the work one session has now; true when something moved (come back at once). */
static bool serve(struct spill *sp, struct entry *e)
{
	bool moved = false, degraded;

	release_extents(e);
	(void)release_held(e);
	for (int i = 0; i < SPILL_LOAD_ROUNDS && restore_batch(sp, e); i++)
		moved = true;
	moved |= evict(sp, e);
	degraded = tier_nvme_degraded(e->tier);
	if (degraded != e->degraded)
		session_tier_set_degraded(e->s, degraded);
	e->degraded = degraded;
	/* Restores that waited for a slot may go now. */
	if (moved)
		for (int i = 0; i < SPILL_LOAD_ROUNDS && restore_batch(sp, e); i++)
			;
	/*
	 * Restores that get no slot while nothing can be evicted: -ENOSPC rather than a wait
	 * until the client's timeout. At once when RAM-only; else after starve_ms without
	 * progress (every used slot leased by steps the client has not finished: it asks for
	 * more at once than its arena holds; or a timed-out I/O is still in flight).
	 */
	if (moved || !session_load_queued(e->s))
		e->starve_since_ms = 0;
	else if (!e->starve_since_ms)
		e->starve_since_ms = time_now_ms();
	if (e->starve_since_ms &&
	    (degraded || time_now_ms() - e->starve_since_ms >= sp->o.starve_ms)) {
		/* counted before the answers go out: a client that reads the stats after its
		 * -ENOSPC sees them */
		uint32_t n = session_load_cancel(e->s), more;
		pthread_mutex_lock(&sp->lock);
		sp->st.restores_starved += n;
		pthread_mutex_unlock(&sp->lock);
		more = session_load_starved(e->s); /* queued since: refused with them */
		if (more) {
			pthread_mutex_lock(&sp->lock);
			sp->st.restores_starved += more;
			pthread_mutex_unlock(&sp->lock);
		}
		n += more;
		if (n) {
			log_warn(TAG,
				 degraded ? "restores refused: tier RAM-only and arena full"
				 : tier_nvme_stuck(e->tier)
				     ? "restores refused: a spill I/O is still in flight past its "
				       "timeout (the units stay on disk)"
				     : "restores refused: no slot can be freed (all leased by "
				       "unfinished steps; the arena is too small for one step)",
				 "session=%llu units=%u waited_ms=%llu",
				 (unsigned long long)session_id(e->s), n,
				 (unsigned long long)(time_now_ms() - e->starve_since_ms));
		}
		e->starve_since_ms = 0;
	}
	release_extents(e);
	answer(sp, e);
	return moved && session_tier_busy(e->s);
}

static void *spill_main(void *arg)
{
	struct spill *sp = arg;
	struct pollfd pfd = {.fd = sp->efd, .events = POLLIN};
	bool again = false;
	uint64_t v;

	while (!atomic_load_explicit(&sp->stop, memory_order_acquire)) {
		if (!again)
			(void)poll(&pfd, 1, SPILL_IDLE_MS);
		(void)!read(sp->efd, &v, sizeof(v));
		again = false;
		for (size_t i = 0;; i++) {
			struct entry *e;
			pthread_mutex_lock(&sp->lock);
			if (i >= sp->n_ents) {
				pthread_mutex_unlock(&sp->lock);
				break;
			}
			e = sp->ents[i];
			e->busy = !e->removing;
			pthread_mutex_unlock(&sp->lock);
			if (!e->busy)
				continue;
			again |= serve(sp, e);
			pthread_mutex_lock(&sp->lock);
			tier_nvme_get_stats(e->tier, &e->tst);
			e->busy = false;
			pthread_cond_broadcast(&sp->idle);
			pthread_mutex_unlock(&sp->lock);
		}
	}
	return NULL;
}

void spill_kick(void *ctx)
{
	struct spill *sp = ctx;
	uint64_t one = 1;

	(void)!write(sp->efd, &one, sizeof(one));
}

/* ---- set-up ------------------------------------------------------------------------------ */

static int parse_errno(const char *v)
{
	static const struct {
		const char *name;
		int err;
	} names[] = {{"EIO", EIO},     {"ENOSPC", ENOSPC}, {"EAGAIN", EAGAIN},
		     {"EINTR", EINTR}, {"ENOMEM", ENOMEM}, {"EBADF", EBADF}};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(v, names[i].name))
			return names[i].err;
	return atoi(v);
}

/* "key=value,..." of struct spill_opts.test_fault into a rule. 0 or -EINVAL. */
static int parse_fault(const char *spec, struct aio_fault_rule *r)
{
	char buf[256], *save = NULL;

	if (strlen(spec) >= sizeof(buf))
		return -EINVAL;
	snprintf(buf, sizeof(buf), "%s", spec);
	*r = (struct aio_fault_rule){0};
	for (char *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
		char *v = strchr(kv, '=');
		if (!v)
			return -EINVAL;
		*v++ = '\0';
		if (!strcmp(kv, "action"))
			r->action = !strcmp(v, "errno")	    ? AIO_FAULT_ERRNO
				    : !strcmp(v, "short")   ? AIO_FAULT_SHORT
				    : !strcmp(v, "corrupt") ? AIO_FAULT_CORRUPT
				    : !strcmp(v, "delay")   ? AIO_FAULT_DELAY
							    : AIO_FAULT_OFF;
		else if (!strcmp(kv, "match"))
			r->match = !strcmp(v, "read")	 ? AIO_FAULT_MATCH_READ
				   : !strcmp(v, "write") ? AIO_FAULT_MATCH_WRITE
							 : 0;
		else if (!strcmp(kv, "nth"))
			r->nth = strtoull(v, NULL, 10);
		else if (!strcmp(kv, "times"))
			r->times = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(kv, "err"))
			r->err = parse_errno(v);
		else if (!strcmp(kv, "short_by"))
			r->short_by = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(kv, "delay_ms"))
			r->delay_ms = (uint32_t)strtoul(v, NULL, 10);
		else
			return -EINVAL;
	}
	return r->action == AIO_FAULT_OFF ? -EINVAL : 0;
}

static int parse_dirs(struct spill *sp, char *err, size_t err_len)
{
	char *save = NULL;

	if (strlen(sp->o.dirs) >= sizeof(sp->dirs_buf)) {
		snprintf(err, err_len, "spill-dirs: too long");
		return -EINVAL;
	}
	snprintf(sp->dirs_buf, sizeof(sp->dirs_buf), "%s", sp->o.dirs);
	for (char *d = strtok_r(sp->dirs_buf, ",", &save); d; d = strtok_r(NULL, ",", &save)) {
		if (!*d)
			continue;
		if (sp->n_dirs == SPILL_MAX_DIRS) {
			snprintf(err, err_len, "spill-dirs: more than %u directories",
				 SPILL_MAX_DIRS);
			return -EINVAL;
		}
		if (access(d, W_OK | X_OK) != 0) {
			int r = err_from_errno();
			snprintf(err, err_len, "spill-dirs: %s: %s", d, err_str(r));
			return -EINVAL;
		}
		sp->dirs[sp->n_dirs++] = d;
	}
	if (!sp->n_dirs) {
		snprintf(err, err_len, "spill-dirs: no directory");
		return -EINVAL;
	}
	return 0;
}

int spill_open(const struct spill_opts *o, struct spill **out, char *err, size_t err_len)
{
	struct spill *sp = calloc(1, sizeof(*sp));
	int r;

	*out = NULL;
	if (!sp)
		return -ENOMEM;
	sp->o = *o;
	if (!sp->o.starve_ms)
		sp->o.starve_ms = 1000;
	sp->efd = -1;
	pthread_mutex_init(&sp->lock, NULL);
	pthread_cond_init(&sp->idle, NULL);
	snprintf(sp->aio_name, sizeof(sp->aio_name), "none");
	r = parse_dirs(sp, err, err_len);
	if (!r && o->test_fault && o->test_fault[0]) {
		struct aio_fault_rule rule;
		r = parse_fault(o->test_fault, &rule);
		if (r)
			snprintf(err, err_len, "test aio fault: cannot parse '%s'", o->test_fault);
		sp->fault = r ? NULL : aio_fault_new();
		if (!r && !sp->fault)
			r = -ENOMEM;
		if (!r) {
			aio_fault_set(sp->fault, &rule);
			log_warn(TAG, "TEST fault injection on spill I/O", "rule=\"%s\"",
				 o->test_fault);
		}
	}
	if (!r) {
		sp->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (sp->efd < 0)
			r = err_from_errno();
	}
	if (!r) {
		r = -pthread_create(&sp->thread, NULL, spill_main, sp);
		sp->started = !r;
	}
	if (r) {
		if (!err[0])
			snprintf(err, err_len, "spill thread: %s", err_str(r));
		spill_free(sp);
		return r;
	}
	log_info(TAG, "NVMe tier configured",
		 "dirs=%s dir_bytes=%llu session_bytes=%llu aio=%s direct=%d sqpoll=%d", o->dirs,
		 (unsigned long long)o->dir_bytes, (unsigned long long)o->session_bytes,
		 o->aio_kind == AIO_KIND_URING	? "uring"
		 : o->aio_kind == AIO_KIND_SYNC ? "sync"
						: "auto",
		 o->direct, o->sqpoll);
	*out = sp;
	return 0;
}

void spill_free(struct spill *sp)
{
	if (!sp)
		return;
	if (sp->started) {
		atomic_store_explicit(&sp->stop, true, memory_order_release);
		spill_kick(sp);
		pthread_join(sp->thread, NULL);
	}
	while (sp->n_ents)
		(void)spill_session_remove(sp, sp->ents[0]->s);
	if (sp->efd >= 0)
		close(sp->efd);
	aio_fault_free(sp->fault);
	free(sp->ents);
	pthread_cond_destroy(&sp->idle);
	pthread_mutex_destroy(&sp->lock);
	free(sp);
}

static void entry_free(struct entry *e);

/* The largest extent a unit can take (4 KiB header block): what reservations count. */
static uint64_t extent_bytes(uint32_t unit_bytes)
{
	return TIER_NVME_ALIGN +
	       ((uint64_t)unit_bytes + TIER_NVME_ALIGN - 1) / TIER_NVME_ALIGN * TIER_NVME_ALIGN;
}

int spill_reserve(struct spill *sp, uint64_t arena_bytes, uint32_t unit_bytes, uint64_t *file_bytes)
{
	uint64_t ext = extent_bytes(unit_bytes);
	uint64_t want = sp->o.session_bytes ? sp->o.session_bytes
					    : 4 * (arena_bytes / unit_bytes) * ext / sp->n_dirs;
	int r = 0;

	if (want < ext)
		want = ext;
	pthread_mutex_lock(&sp->lock);
	if (sp->o.dir_bytes && sp->reserved + want > sp->o.dir_bytes) {
		uint64_t left = sp->o.dir_bytes - sp->reserved;
		if (left < ext)
			r = -ENOSPC;
		want = left;
	}
	if (!r)
		sp->reserved += want;
	pthread_mutex_unlock(&sp->lock);
	*file_bytes = r ? 0 : want;
	return r;
}

void spill_unreserve(struct spill *sp, uint64_t file_bytes)
{
	pthread_mutex_lock(&sp->lock);
	sp->reserved -= file_bytes <= sp->reserved ? file_bytes : sp->reserved;
	pthread_mutex_unlock(&sp->lock);
}

uint32_t spill_n_dirs(const struct spill *sp)
{
	return sp->n_dirs;
}

/* Batch sizes and the request arrays of a new entry whose tier is open. 0 or -ENOMEM. */
static int entry_buffers(const struct spill *sp, struct entry *e)
{
	uint64_t batch;

	/* A batch is what one staging buffer holds: one tier call, no drain in between. */
	e->ext_bytes = tier_nvme_extent_bytes(e->tier);
	batch = sp->o.batch_bytes / e->ext_bytes;
	e->batch = batch < SPILL_MIN_BATCH   ? SPILL_MIN_BATCH
		   : batch > SPILL_MAX_BATCH ? SPILL_MAX_BATCH
					     : (uint32_t)batch;
	e->wbatch = tier_nvme_batch_units(e->tier) < e->batch ? tier_nvme_batch_units(e->tier)
								: e->batch;
	e->io = calloc(e->batch, sizeof(*e->io));
	e->r = calloc(e->batch, sizeof(*e->r));
	e->held = calloc(e->batch, sizeof(*e->held));
	e->ext = calloc(e->batch, sizeof(*e->ext));
	if (!e->io || !e->r || !e->held || !e->ext)
		return -ENOMEM;
	for (int i = 0; i < 2; i++) {
		e->wb[i].io = calloc(e->batch, sizeof(*e->wb[i].io));
		e->wb[i].w = calloc(e->batch, sizeof(*e->wb[i].w));
		if (!e->wb[i].io || !e->wb[i].w)
			return -ENOMEM;
	}
	return 0;
}

int spill_session_add(struct spill *sp, struct session *s, uint64_t file_bytes)
{
	struct tier_nvme_opts to = {
	    .dirs = sp->dirs,
	    .n_dirs = sp->n_dirs,
	    .files_per_dir = 1,
	    .file_bytes = file_bytes,
	    .grow_bytes = sp->o.batch_bytes, /* reserve disk a batch at a time */
	    .unit_bytes = session_geometry(s)->unit_bytes,
	    .header_bytes = sp->o.header_bytes,
	    .batch_bytes = sp->o.batch_bytes,
	    .queue_depth = sp->o.queue_depth,
	    .aio_kind = sp->o.aio_kind,
	    .sqpoll = sp->o.sqpoll,
	    .no_direct = !sp->o.direct,
	    .unlink_early = true, /* a killed daemon leaves no spill file behind */
	    .backoff_ms = sp->o.backoff_ms,
	    .io_timeout_ms = sp->o.io_timeout_ms,
	    .fault = sp->fault,
	    /* registered (pinned) only for the direct restores that use it */
	    .arena = sp->o.no_direct_restore ? NULL : session_arena_base(s),
	    .arena_bytes = sp->o.no_direct_restore ? 0 : session_arena_size(s),
	    .no_direct_read = sp->o.no_direct_restore,
	};
	struct entry *e = calloc(1, sizeof(*e));
	int r = e ? 0 : -ENOMEM;

	if (!r)
		r = tier_nvme_open(&to, &e->tier);
	if (!r)
		r = entry_buffers(sp, e);
	pthread_mutex_lock(&sp->lock);
	if (!r && sp->n_ents == sp->cap_ents) {
		size_t ncap = sp->cap_ents ? sp->cap_ents * 2 : 16;
		void *p = realloc(sp->ents, ncap * sizeof(*sp->ents));
		if (p) {
			sp->ents = p;
			sp->cap_ents = ncap;
		} else {
			r = -ENOMEM;
		}
	}
	if (!r) {
		e->s = s;
		e->file_bytes = file_bytes;
		tier_nvme_get_stats(e->tier, &e->tst);
		snprintf(sp->aio_name, sizeof(sp->aio_name), "%s", tier_nvme_aio_name(e->tier));
		sp->ents[sp->n_ents++] = e;
	}
	pthread_mutex_unlock(&sp->lock);
	if (r) {
		entry_free(e);
		return r;
	}
	return 0;
}

static void entry_free(struct entry *e)
{
	if (!e)
		return;
	tier_nvme_free(e->tier); /* waits for its I/O; the files go with every extent */
	free(e->io);
	free(e->r);
	free(e->held); /* the session goes too: nothing to answer */
	for (int i = 0; i < 2; i++) {
		free(e->wb[i].io);
		free(e->wb[i].w);
	}
	free(e->ext);
	free(e);
}

static void stats_add(struct tier_nvme_stats *a, const struct tier_nvme_stats *b)
{
	a->write_ios += b->write_ios;
	a->read_ios += b->read_ios;
	a->crc_failures += b->crc_failures;
	a->id_mismatches += b->id_mismatches;
	a->io_errors += b->io_errors;
	a->enospc_events += b->enospc_events;
	a->degraded_entries += b->degraded_entries;
	a->recoveries += b->recoveries;
	a->direct_reads += b->direct_reads;
}

bool spill_session_remove(struct spill *sp, struct session *s)
{
	struct entry *e = NULL;

	pthread_mutex_lock(&sp->lock);
	for (size_t i = 0; i < sp->n_ents; i++) {
		if (sp->ents[i]->s != s)
			continue;
		e = sp->ents[i];
		e->removing = true;
		while (e->busy)
			pthread_cond_wait(&sp->idle, &sp->lock);
		/* Order kept: the thread walks ents[] by index. */
		memmove(&sp->ents[i], &sp->ents[i + 1], (sp->n_ents - i - 1) * sizeof(*sp->ents));
		sp->n_ents--;
		break;
	}
	pthread_mutex_unlock(&sp->lock);
	if (!e)
		return false;
	tier_nvme_get_stats(e->tier, &e->tst);
	pthread_mutex_lock(&sp->lock);
	stats_add(&sp->closed, &e->tst);
	sp->reserved -= e->file_bytes <= sp->reserved ? e->file_bytes : sp->reserved;
	pthread_mutex_unlock(&sp->lock);
	entry_free(e);
	return true;
}

void spill_get_stats(struct spill *sp, struct spill_stats *st)
{
	struct tier_nvme_stats sum;

	pthread_mutex_lock(&sp->lock);
	*st = sp->st;
	sum = sp->closed;
	st->sessions = sp->n_ents;
	for (size_t i = 0; i < sp->n_ents; i++) {
		const struct tier_nvme_stats *t = &sp->ents[i]->tst;
		stats_add(&sum, t);
		st->extents_used += t->extents_used;
		st->extents_total += t->extents_total;
		st->degraded_now += t->degraded;
		st->arena_registered += t->arena_registered;
		st->bytes_used += t->extents_used * sp->ents[i]->ext_bytes;
		if (!st->extent_bytes)
			st->extent_bytes = sp->ents[i]->ext_bytes;
	}
	st->write_ios = sum.write_ios;
	st->read_ios = sum.read_ios;
	st->crc_failures = sum.crc_failures;
	st->id_mismatches = sum.id_mismatches;
	st->io_errors = sum.io_errors;
	st->enospc_events = sum.enospc_events;
	st->degraded_entries = sum.degraded_entries;
	st->recoveries = sum.recoveries;
	st->units_direct = sum.direct_reads;
	st->disk_bytes_reserved = sp->reserved * sp->n_dirs;
	snprintf(st->aio, sizeof(st->aio), "%s", sp->aio_name);
	pthread_mutex_unlock(&sp->lock);
}
