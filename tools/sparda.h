/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Subcommands of the `sparda` umbrella command. Each is `int cmd_x(int argc, char **argv)`
 * with argv[0] the subcommand's name; it returns the process exit status (0 ok, 1 failure,
 * 2 usage). Adding one: declare it here and add one line to the table in sparda.c.
 */
#ifndef SPARDA_TOOLS_SPARDA_H
#define SPARDA_TOOLS_SPARDA_H

/* `sparda bench memsvc [...]`: hot-path and ZeroMQ Forecast latency (bench_memsvc.c). */
int cmd_bench(int argc, char **argv);
/* `sparda demo-memsvc [...]`: daemon + client round trip with verified bytes (demo_memsvc.c). */
int cmd_demo_memsvc(int argc, char **argv);

/* `sparda run [...]`: start memsvc, run sparda-compute against it, drain (run_cmd.c). */
int cmd_run(int argc, char **argv);

/* Operator commands for a detached sparda-memsvc in a runtime dir (ops_*.c): `sparda up`
 * starts it, `down` drains and stops it, `status` and `stats` ask it, `reload` makes it
 * re-read its tenants file, `config --dump` prints the effective config of either process. */
int cmd_up(int argc, char **argv);
int cmd_down(int argc, char **argv);
int cmd_reload(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_config(int argc, char **argv);

/* `sparda train-forecast [...]`: Forecast distillation (compute/train_cli.c, sparda_train). */
int train_forecast_main(int argc, char **argv);

#endif
