/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sparda-memsvc: config -> tenants -> counters -> server (endpoints, hot path) -> metrics ->
 * run until drained -> tear down in reverse. Exit 0 after a drain, 2 on bad config, 1 when an
 * endpoint cannot start.
 */
#include <stdio.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "mconfig.h"
#include "metrics.h"
#include "mstats.h"
#include "server.h"
#include "tenant.h"

#define TAG "main"

int main(int argc, char **argv)
{
	struct tenant_table *tenants = NULL;
	struct metrics *metrics = NULL;
	struct server *sv = NULL;
	struct mstats *stats = NULL;
	struct mconfig cfg;
	char err[512] = "";
	int r;

	log_set_process("memsvc");
	r = mconfig_load(&cfg, argc, argv, stdout, err, sizeof(err));
	if (r == 1)
		return 0;
	if (!r)
		r = mconfig_resolve(&cfg, err, sizeof(err));
	if (!r)
		r = tenant_table_load(cfg.tenants, geteuid(), cfg.default_quota, &tenants, err,
				      sizeof(err));
	if (r) {
		log_error(TAG, "bad config", "error=\"%s\"", err);
		return 2;
	}
	log_set_level((enum log_level)cfg.log_level);
	stats = mstats_new();
	r = stats ? server_open(&cfg, tenants, stats, &sv, err, sizeof(err)) : -ENOMEM;
	if (!r && cfg.metrics_port)
		r = metrics_open((uint16_t)cfg.metrics_port, sv, tenants, stats, &metrics, err,
				 sizeof(err));
	if (r) {
		log_error(TAG, "cannot start", "status=%s error=\"%s\"", err_name(r), err);
		goto out_free;
	}
	r = server_run(sv);
	if (r)
		log_error(TAG, "loop failed", "status=%s", err_name(r));
out_free:
	metrics_free(metrics);
	server_free(sv);
	mstats_free(stats);
	tenant_table_free(tenants);
	return r ? 1 : 0;
}
