/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sparda-memsvc config table and the defaults that depend on the machine. Every knob of the
 * daemon is one row here; nothing else parses flags.
 */
#include "mconfig.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

#define S(f) offsetof(struct mconfig, f), sizeof(((struct mconfig *)0)->f)
#define N(f) offsetof(struct mconfig, f), 0

static const char *const level_names[] = {"debug", "info", "warn", "error", "off", NULL};
/* In enum aio_kind order. */
static const char *const aio_names[] = {"uring", "sync", "auto", NULL};

static const struct config_key keys[] = {
    {"runtime-dir", CONFIG_TYPE_STRING, S(runtime_dir), "", 0, 0, NULL,
     "directory of attach.sock and ctl.ipc (default $XDG_RUNTIME_DIR/sparda, /run/sparda "
     "or /tmp/sparda-$UID)"},
    {"ram-budget", CONFIG_TYPE_SIZE, N(ram_budget), "0", 0, 0, NULL,
     "bytes of RAM for all arenas; 0 = 50% of MemAvailable"},
    {"tenants", CONFIG_TYPE_STRING, S(tenants), "", 0, 0, NULL,
     "tenants file (name uid=U[,U] quota=BYTES [max-sessions=N] [max-seqs=N] "
     "[max-inflight=N]); empty = tenant 'default' for this uid and root"},
    {"default-quota", CONFIG_TYPE_SIZE, N(default_quota), "0", 0, 0, NULL,
     "arena bytes of the built-in 'default' tenant; 0 = the whole budget"},
    {"metrics-port", CONFIG_TYPE_UINT, N(metrics_port), "9464", 0, 65535, NULL,
     "HTTP port of /metrics and /healthz; 0 = off"},
    {"tcp", CONFIG_TYPE_STRING, S(tcp), "", 0, 0, NULL,
     "optional tcp://HOST:PORT control endpoint (requires CURVE: curve-secret and tcp-keys)"},
    {"tcp-keys", CONFIG_TYPE_STRING, S(tcp_keys), "", 0, 0, NULL,
     "allowed client keys for tcp: lines 'tenant z85-public-key'"},
    {"curve-secret", CONFIG_TYPE_STRING, S(curve_secret), "", 0, 0, NULL,
     "file holding the server's z85 CURVE secret key"},
    {"huge-pages", CONFIG_TYPE_BOOL, N(huge_pages), "false", 0, 0, NULL,
     "back arenas with huge pages (MFD_HUGETLB)"},
    {"max-sessions", CONFIG_TYPE_UINT, N(max_sessions), "64", 1, 4096, NULL,
     "attached sessions, all tenants"},
    {"max-arena", CONFIG_TYPE_SIZE, N(max_arena), "1T", 65536, 1125899906842624.0, NULL,
     "largest arena one session may request"},
    {"sq-entries", CONFIG_TYPE_UINT, N(sq_entries), "4096", 2, 1048576, NULL,
     "entries of each session's SQ and CQ rings (power of two)"},
    {"unit-words", CONFIG_TYPE_UINT, N(unit_words), "4", 1, 64, NULL,
     "unit words (index entries) per arena slot in each session's table"},
    {"drain-timeout-ms", CONFIG_TYPE_UINT, N(drain_timeout_ms), "5000", 0, 600000, NULL,
     "longest time a drain waits for sessions before exiting"},
    {"watchdog-ms", CONFIG_TYPE_UINT, N(watchdog_ms), "100", 10, 60000, NULL,
     "housekeeping period: deferred-slot reclaim, drain checks"},
    {"remote-idle-ms", CONFIG_TYPE_UINT, N(remote_idle_ms), "60000", 100, 86400000, NULL,
     "a remote (tcp) session that sends nothing this long is closed"},
    {"poll-spin-us", CONFIG_TYPE_UINT, N(poll_spin_us), "50", 0, 1000000, NULL,
     "sleep mode: spin this long on the SQ before sleeping on its doorbell"},
    {"log-level", CONFIG_TYPE_ENUM, N(log_level), "info", 0, 0, level_names,
     "debug, info, warn, error or off"},
    {"spill-dirs", CONFIG_TYPE_STRING, S(spill_dirs), "", 0, 0, NULL,
     "NVMe tier: comma-separated spill directories; empty = RAM only"},
    {"spill-bytes", CONFIG_TYPE_SIZE, N(spill_bytes), "0", 0, 0, NULL,
     "spill file bytes per directory for all sessions together; 0 = no cap"},
    {"spill-session-bytes", CONFIG_TYPE_SIZE, N(spill_session_bytes), "0", 0, 0, NULL,
     "spill file bytes per session and directory; 0 = 4 x the session's arena"},
    {"spill-aio", CONFIG_TYPE_ENUM, N(spill_aio), "auto", 0, 0, aio_names,
     "spill I/O: uring, sync (pread/pwrite) or auto (uring, else sync)"},
    {"spill-sqpoll", CONFIG_TYPE_BOOL, N(spill_sqpoll), "false", 0, 0, NULL,
     "io_uring SQPOLL for spill I/O (falls back to a plain ring if refused)"},
    {"spill-direct", CONFIG_TYPE_BOOL, N(spill_direct), "true", 0, 0, NULL,
     "open spill files O_DIRECT where the filesystem accepts it"},
    {"spill-direct-restore", CONFIG_TYPE_BOOL, N(spill_direct_restore), "false", 0, 0, NULL,
     "restores read each unit straight into its arena slot (io_uring with the arena registered, "
     "O_DIRECT, aligned units: two reads per unit); false: one read per run of extents into "
     "staging, then a copy (measured faster)"},
    {"spill-batch-bytes", CONFIG_TYPE_SIZE, N(spill_batch_bytes), "16M", 4096, 1073741824.0, NULL,
     "staging buffer of each session's tier (two: one batch is staged while the other is on "
     "the disk): the largest write and read batch"},
    {"spill-header-bytes", CONFIG_TYPE_SIZE, N(spill_header_bytes), "0", 0, 4096, NULL,
     "header block of each spilled unit: 0 = the spill files' direct-I/O alignment and "
     "filesystem block size (4K on ext4/XFS), else 512, 1K, 2K or 4K"},
    {"spill-queue-depth", CONFIG_TYPE_UINT, N(spill_queue_depth), "64", 1, 4096, NULL,
     "spill I/O operations in flight per session"},
    {"spill-high-water", CONFIG_TYPE_DOUBLE, N(spill_high_water), "0.9", 0, 1, NULL,
     "evict to disk when a session's arena slots in use pass this fraction"},
    {"spill-low-water", CONFIG_TYPE_DOUBLE, N(spill_low_water), "0.75", 0, 1, NULL,
     "... down to this fraction (oldest last-selected step first)"},
    {"spill-io-timeout-ms", CONFIG_TYPE_UINT, N(spill_io_timeout_ms), "30000", 100, 600000, NULL,
     "a spill or restore batch whose I/O takes longer fails (its buffer stays with the I/O)"},
    {"spill-starve-ms", CONFIG_TYPE_UINT, N(spill_starve_ms), "1000", 10, 600000, NULL,
     "restores that get no slot for this long while nothing can be evicted (every slot leased "
     "by steps the client has not finished) are answered -ENOSPC"},
    {"spill-backoff-ms", CONFIG_TYPE_UINT, N(spill_backoff_ms), "1000", 10, 600000, NULL,
     "after ENOSPC the tier is RAM-only; it tries to spill again after this"},
};

static const struct config_table table = {
    .program = "sparda-memsvc",
    .summary = "KV memory service: per-tenant shared-memory arenas, block index, rings",
    .keys = keys,
    .n_keys = sizeof(keys) / sizeof(keys[0]),
};

const struct config_table *mconfig_table(void)
{
	return &table;
}

int mconfig_load(struct mconfig *c, int argc, char **argv, FILE *out, char *err, size_t err_len)
{
	int n_pos = 0;
	int r;

	memset(c, 0, sizeof(*c));
	r = config_load(&table, c, "SPARDA_MEMSVC_CONFIG", argc, argv, &n_pos, out, err, err_len);
	if (r != 0)
		return r;
	if (n_pos > 0) {
		snprintf(err, err_len, "unexpected argument '%s' (flags are --key=value)", argv[1]);
		return -EINVAL;
	}
	return 0;
}

/* MemAvailable from /proc/meminfo in bytes, or 0 when it cannot be read. */
static uint64_t mem_available(void)
{
	unsigned long long kb = 0;
	char line[256];
	FILE *f = fopen("/proc/meminfo", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
			break;
	}
	fclose(f);
	return (uint64_t)kb * 1024;
}

static int resolve_runtime_dir(struct mconfig *c, char *err, size_t err_len)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	int n;

	if (c->runtime_dir[0])
		return 0;
	if (xdg && xdg[0])
		n = snprintf(c->runtime_dir, sizeof(c->runtime_dir), "%s/sparda", xdg);
	else if (geteuid() == 0)
		n = snprintf(c->runtime_dir, sizeof(c->runtime_dir), "/run/sparda");
	else
		n = snprintf(c->runtime_dir, sizeof(c->runtime_dir), "/tmp/sparda-%u",
			     (unsigned)geteuid());
	if (n < 0 || (size_t)n >= sizeof(c->runtime_dir)) {
		snprintf(err, err_len, "key runtime-dir: derived path too long");
		return -EINVAL;
	}
	return 0;
}

int mconfig_resolve(struct mconfig *c, char *err, size_t err_len)
{
	int r = resolve_runtime_dir(c, err, err_len);

	if (r)
		return r;
	/* sockaddr_un.sun_path is 108 bytes; "attach.sock" and "ctl.ipc" go under the dir. */
	if (strlen(c->runtime_dir) > 90) {
		snprintf(err, err_len, "key runtime-dir: '%s' is too long for a socket path",
			 c->runtime_dir);
		return -EINVAL;
	}
	if (c->ram_budget == 0) {
		c->ram_budget = mem_available() / 2;
		if (c->ram_budget == 0) {
			snprintf(err, err_len,
				 "key ram-budget: MemAvailable unreadable; set it explicitly");
			return -EINVAL;
		}
	}
	if (c->sq_entries & (c->sq_entries - 1)) {
		snprintf(err, err_len, "key sq-entries: %llu is not a power of two",
			 (unsigned long long)c->sq_entries);
		return -EINVAL;
	}
	if (c->spill_header_bytes &&
	    (c->spill_header_bytes < 512 || (c->spill_header_bytes & (c->spill_header_bytes - 1)))) {
		snprintf(err, err_len, "key spill-header-bytes: %llu is not 0, 512, 1K, 2K or 4K",
			 (unsigned long long)c->spill_header_bytes);
		return -EINVAL;
	}
	if (c->spill_low_water > c->spill_high_water) {
		snprintf(err, err_len, "key spill-low-water: %g is above spill-high-water %g",
			 c->spill_low_water, c->spill_high_water);
		return -EINVAL;
	}
	if (c->tcp[0] &&
	    (strncmp(c->tcp, "tcp://", 6) != 0 || !c->tcp_keys[0] || !c->curve_secret[0])) {
		snprintf(err, err_len,
			 "key tcp: '%s' needs the form tcp://HOST:PORT and both tcp-keys and "
			 "curve-secret (tcp requires CURVE)",
			 c->tcp);
		return -EINVAL;
	}
	return 0;
}
