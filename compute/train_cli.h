/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `sparda train-forecast`: flags -> calibration data, model and backend -> train_forecast ->
 * the Forecast file, a per-layer table on stdout, progress on stderr, optional JSON report.
 */
#ifndef SPARDA_COMPUTE_TRAIN_CLI_H
#define SPARDA_COMPUTE_TRAIN_CLI_H

/*
 * sparda train-forecast --out FILE [--model DIR] [--calib FILE] [--seqs N] [--heldout N]
 *     [--seq-len N] [--steps N] [--lr X] [--batch N] [--seed N] [--threads N]
 *     [--query-stride N] [--ridge X] [--backend auto|cpu|cuda] [--checkpoint FILE]
 *     [--checkpoint-every N] [--json PATH] [--quiet]
 * Without --model it trains the embedded tiny model (preset tiny, seed 1234, generated into a
 * temporary directory). argv[0] is the subcommand name. Returns the process exit status:
 * 0 on success, 1 when training fails, 2 for a usage error. Not thread safe (getopt).
 */
int train_forecast_main(int argc, char **argv);

#endif
