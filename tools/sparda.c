/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `sparda`: the umbrella command for the common jobs. A table maps subcommand names to their
 * functions (declared in sparda.h); `sparda help` lists them.
 */
#include <stdio.h>
#include <string.h>

#include "model_cli.h"
#include "sparda.h"

struct subcommand {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *usage;
};

static int cmd_help(int argc, char **argv);

static const struct subcommand subcommands[] = {
    {"help", cmd_help, "help                 this list"},
    {"run", cmd_run, "run [...]            the main job: memsvc + compute, every mode, one table"},
    {"up", cmd_up, "up [...]             start sparda-memsvc as a daemon in a runtime dir"},
    {"down", cmd_down, "down [...]           drain and stop the daemon that `up` started"},
    {"status", cmd_status, "status [...]         is it running, healthy; sessions, arena, errors"},
    {"reload", cmd_reload, "reload [...]         make the daemon re-read its tenants file"},
    {"keygen", cmd_keygen, "keygen --out PREFIX  a CURVE key pair for memsvc's tcp endpoint"},
    {"stats", cmd_stats, "stats [...]          every stats name/value pair of the daemon"},
    {"config", cmd_config, "config --dump memsvc|compute [flags]   the effective config"},
    {"bench", cmd_bench, "bench memsvc|spill  Forecast latency over shm rings and ZeroMQ; NVMe tier rates"},
    {"gen-model", model_gen_main,
     "gen-model [...]      write a synthetic model (preset + overrides) in HF safetensors layout"},
    {"train-forecast", train_forecast_main,
     "train-forecast [...] train the Forecast projections of a frozen model (distillation)"},
    {"demo-memsvc", cmd_demo_memsvc,
     "demo-memsvc [...]    start memsvc, write, commit, Forecast and verify units"},
};

#define N_SUBCOMMANDS (sizeof(subcommands) / sizeof(subcommands[0]))

static int cmd_help(int argc, char **argv)
{
	printf(
	    "usage: sparda <subcommand> [args]   (sparda <subcommand> --help for its flags)\n\n");
	for (size_t i = 0; i < N_SUBCOMMANDS; i++)
		printf("  %s\n", subcommands[i].usage);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		cmd_help(0, NULL);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
		return cmd_help(argc - 1, argv + 1);
	for (size_t i = 0; i < N_SUBCOMMANDS; i++)
		if (!strcmp(argv[1], subcommands[i].name))
			return subcommands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "sparda: unknown subcommand '%s' (try: sparda help)\n", argv[1]);
	return 2;
}
