#!/usr/bin/env bash
# One mlp-sweep worker per SLURM array task, all on one shared Optuna study.
#
#   export MLPTRAIN_STORAGE=postgresql://USER@DBHOST:5432/optuna   # PGPASSWORD or ~/.pgpass
#   sbatch --array=0-7 scripts/slurm_sweep.sh        # 8 workers; the study stops at --trials
#
# Every task runs the same command with its own sweep folder (runs/<job>-<task>/...), so a
# task that is cancelled or whose node dies is retried by the others after --grace seconds,
# and `mlp-sweep --resume <its folder>` can rejoin later. Edit the search below.
#SBATCH --job-name=mlp-sweep
#SBATCH --cpus-per-task=2
#SBATCH --gres=gpu:1
#SBATCH --time=04:00:00
#SBATCH --output=slurm-%A_%a.out
set -euo pipefail

: "${MLPTRAIN_STORAGE:?set MLPTRAIN_STORAGE to the URL of the shared study (postgresql://... or journal:PATH)}"
STUDY="${MLPTRAIN_STUDY:-fashion-search}"
RUNS="${MLPTRAIN_RUNS:-runs}/${SLURM_ARRAY_JOB_ID:-local}-${SLURM_ARRAY_TASK_ID:-0}"

exec mlp-sweep --config fashion --search optuna --trials 100 --prune \
    --param optimizer.lr=loguniform:1e-4:1e-1 \
    --param model.dropout=uniform:0:0.5 \
    --storage "$MLPTRAIN_STORAGE" --study "$STUDY" \
    --devices auto \
    --set "output.runs_dir=$RUNS"
