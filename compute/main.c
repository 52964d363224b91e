/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sparda-compute: parse the config table (defaults < file < env < flags) and run the job, or
 * serve requests with --serve-dir.
 */
#include <stdio.h>

#include "job.h"
#include "log.h"

int main(int argc, char **argv)
{
	struct job_config cfg;
	char err[512] = "";
	int npos = 0;

	log_set_process("compute");
	int rc = config_load(&job_config_table, &cfg, "SPARDA_COMPUTE_CONFIG", argc, argv, &npos,
			     stdout, err, sizeof(err));
	if (rc == 1)
		return 0;
	if (rc < 0) {
		fprintf(stderr, "sparda-compute: %s\n", err[0] ? err : "bad configuration");
		return 2;
	}
	if (npos) {
		fprintf(stderr, "sparda-compute: unexpected argument '%s' (see --help)\n", argv[1]);
		return 2;
	}
	return cfg.serve_dir[0] ? job_serve(&cfg, stdout) : job_run(&cfg, stdout);
}
