/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sparda-memsvc configuration: one declarative table (mconfig.c) drives defaults, the config
 * file (--config or SPARDA_MEMSVC_CONFIG), SPARDA_* environment overrides, flags, --help and
 * --dump-config. mconfig_resolve() fills in what depends on the machine (runtime dir, budget).
 */
#ifndef SPARDA_MEMSVC_MCONFIG_H
#define SPARDA_MEMSVC_MCONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define MCONFIG_PATH_MAX 256

struct mconfig {
	char runtime_dir[MCONFIG_PATH_MAX];  /* "" = derived (see mconfig_resolve) */
	uint64_t ram_budget;		     /* bytes of arenas; 0 = 50% of MemAvailable */
	char tenants[MCONFIG_PATH_MAX];	     /* tenants file; "" = one tenant "default" */
	uint64_t default_quota;		     /* bytes for the built-in tenant; 0 = the budget */
	uint64_t metrics_port;		     /* 0 = no HTTP endpoint */
	char tcp[128];			     /* "tcp://HOST:PORT" or "" (off) */
	char tcp_keys[MCONFIG_PATH_MAX];     /* lines "tenant z85-public-key" */
	char curve_secret[MCONFIG_PATH_MAX]; /* file holding the server's z85 secret key */
	bool huge_pages;
	uint64_t max_sessions;
	uint64_t max_arena;  /* largest arena one session may ask for */
	uint64_t sq_entries; /* SQ and CQ ring entries per session */
	uint64_t unit_words; /* unit words per session = this x slots (at least 65536) */
	uint64_t drain_timeout_ms;
	uint64_t watchdog_ms;	 /* period of the housekeeping timer (epoch reclaim, watchdog) */
	uint64_t remote_idle_ms; /* a remote (tcp) session with no request this long ends */
	uint64_t poll_spin_us;	 /* SLEEP mode: spin this long before sleeping on the doorbell */
	int log_level;		 /* enum log_level */
	/* NVMe tier (off while spill_dirs is empty) */
	char spill_dirs[1024];	      /* comma-separated directories */
	uint64_t spill_bytes;	      /* spill file bytes per directory, all sessions; 0 = no cap */
	uint64_t spill_session_bytes; /* per session and directory; 0 = 4 x its arena */
	int spill_aio;		      /* enum aio_kind: uring, sync, auto */
	bool spill_sqpoll;
	bool spill_direct;	   /* O_DIRECT where the filesystem takes it */
	bool spill_direct_restore; /* restores read straight into the arena where they can */
	uint64_t spill_batch_bytes;
	uint64_t spill_queue_depth;
	uint64_t spill_header_bytes;
	uint64_t spill_starve_ms;
	double spill_high_water, spill_low_water; /* fractions of each arena's slots */
	uint64_t spill_io_timeout_ms, spill_backoff_ms;
};

/*
 * Load the config from defaults, file, environment and argv (see common/config.h for the
 * precedence). Returns 0 (ready), 1 (--help/--dump-config written to out: exit 0) or -errno
 * with err naming the key and where its value came from.
 */
int mconfig_load(struct mconfig *c, int argc, char **argv, FILE *out, char *err, size_t err_len);

/*
 * Fill derived values: runtime_dir ($XDG_RUNTIME_DIR/sparda, /run/sparda for root,
 * /tmp/sparda-$UID otherwise) and ram_budget (50% of MemAvailable) when left at 0, and check
 * cross-key rules. Returns 0 or -EINVAL with err naming the key.
 */
int mconfig_resolve(struct mconfig *c, char *err, size_t err_len);

/* The table itself, for tests and tools. */
const struct config_table *mconfig_table(void);

#endif
