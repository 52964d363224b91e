/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `sparda gen-model`: write a synthetic model (model_generate) from a preset geometry with
 * optional overrides, and optionally fit its Forecast (train_forecast_dir). A subcommand entry
 * point for the umbrella `sparda` command (library sparda_train).
 */
#ifndef SPARDA_COMPUTE_MODEL_CLI_H
#define SPARDA_COMPUTE_MODEL_CLI_H

/*
 * sparda gen-model --preset NAME --out DIR [--seed N] [--layers N] [--hidden N] [--heads N]
 *                  [--kv-heads N] [--head-dim N] [--ffn N] [--vocab N] [--max-pos N]
 *                  [--dense-len N] [--topk N] [--train-forecast [--forecast-backend B]
 *                  [--forecast-seqs N] [--forecast-seq-len N]]
 * argv[0] is the subcommand name. Overrides keep MiniCPM's scale_depth and dim_model_base.
 * Prints one summary line on stdout (two with --train-forecast), errors on stderr. Returns the
 * process exit status: 0 on success, 1 when generation or the fit fails, 2 for a usage error.
 * Not thread safe (getopt).
 */
int model_gen_main(int argc, char **argv);

#endif
