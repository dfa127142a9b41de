#!/usr/bin/env bash
# The algorithmic study (docs/algorithmic.md): the models of Irie et al. (NeurIPS 2021) plus
# DeltaNet with β ∈ (0, 2), SRWM, delta_mlp and mesa, on code execution (3 and 5 variables) and
# sequential ListOps (depth 10 and 15), 3 seeds, at a CPU budget (2.3–3.5 h on 2 cores, estimated).
# Three formal sweeps (their bins differ), each resumable: re-run the same command to go on.
#
#   scripts/algorithmic_study.sh studies/algorithmic                  # the study
#   scripts/algorithmic_study.sh /tmp/tiny --train-size 16 --valid-size 8 --eval-size 8 \
#       --epochs 1 --d-model 16 --d-ff 32                              # the same grid, tiny
#
# Extra flags after the folder override the study's settings (the last value of a flag wins).
set -euo pipefail
OUT=${1:?usage: scripts/algorithmic_study.sh OUT [flags]}
shift
PYTHON=${PYTHON:-python}
MODELS=(lstm transformer linear deltanet delta_rnn rec_deltanet
        deltanet_neg=deltanet:allow_negative_eigenvalues=true,feature_map=l2
        srwm delta_mlp mesa)
COMMON=(--models "${MODELS[@]}" --seeds 1 2 3 --jobs 2 --threads 1
        --train-size 2000 --valid-size 200 --eval-size 500 --epochs 4 --batch-size 32
        --lr 1e-3 --layers 2 --d-model 64 --heads 4 --d-ff 128 --eval-every 63)
sweep() { nice -n 5 "$PYTHON" -m fwp formal sweep "${COMMON[@]}" "$@"; }
sweep --languages code-exec-3 code-exec-5 --train-bin 20 --bins 20 --out "$OUT/code" "$@"
sweep --languages listops --train-bin 10 --bins 10 --out "$OUT/listops10" "$@"
sweep --languages listops --train-bin 15 --bins 15 --out "$OUT/listops15" "$@"
