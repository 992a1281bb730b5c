#!/usr/bin/env bash
# Pipeline checks (called by .ci/run after the unit tests; each part can run alone):
#
#   .ci/pipeline_checks.sh [dryrun] [mini] [study] [slurm] [rehearsal]   # default: all five
#
#   dryrun  `snakemake -n` at the mini, cifar and paper scales with the per-table job counts
#           asserted (tests/test_pipeline_dryrun.py), `snakemake --lint`, and the timed paper
#           dry run through the slurm profile.
#   mini    the whole mini pipeline from scratch (`snakemake --cores 2`, the README's main job),
#           then every table and Fig. 2 checked for content (no planned cell may be missing),
#           the budget held to the run's benchmark files (25 %), --status, and the report
#           built and checked for every table's page, heatmap and curves.
#   study   a 2 x 2 slice of the eq. 2 / Algorithm 1 study (`snakemake study`: alpha {1.28,
#           0.16} x beta {0.16, 0.01}, both conventions, both archs, 2 seeds, 2 epochs) through
#           the same rules into work/study_ci/, then its outputs checked (--check-study).
#   slurm   a real SLURM (.ci/slurm_up.sh: 2 nodes on this machine), a small mini-scale target
#           run through `snakemake --profile slurm`, the jobs checked to have gone through
#           sbatch and completed, then .ci/slurm_down.sh. Needs root and apt (Debian/Ubuntu).
#   rehearsal  the rehearsal scale (config.yaml scales.rehearsal: the paper's plan and code
#           paths, mini models and data) end to end through `snakemake --profile slurm` on the
#           2-node SLURM: every table and Fig. 2; then a multi-node pretraining checked
#           (NumNodes=2, world size 2 x 2, weights bit-identical to a 1 x 4 run of the same
#           spec) and two preemptions through SLURM (a time limit shorter than the run,
#           single-node and 2-node: signal, checkpoint, retry, resume, bit-identical result).
set -euo pipefail
cd "$(dirname "$0")/.."

parts=("$@")
[[ ${#parts[@]} -eq 0 ]] && parts=(dryrun mini study slurm rehearsal)
log_dir=${PIPELINE_CHECKS_LOGS:-work/ci}
mkdir -p "$log_dir"

say() { printf '\n=== %s\n' "$*"; }

run_dryrun() {
    say "dry runs at all scales + per-table job counts (pytest -m slow tests/test_pipeline_dryrun.py)"
    python -m pytest -q -m slow tests/test_pipeline_dryrun.py
    say "snakemake --lint"
    snakemake --lint --nolock >"$log_dir/lint.log" 2>&1 || true
    if grep -q -E "^(Lints for|Rule .* lints)" "$log_dir/lint.log"; then
        cat "$log_dir/lint.log"
        echo "lint: not clean" >&2
        return 1
    fi
    echo "lint: clean"
    say "paper-scale dry run through the slurm profile (every job with its resources)"
    local t0 t1
    t0=$(date +%s.%N)
    snakemake -n --nolock --profile slurm >"$log_dir/dryrun_paper_slurm.log" 2>&1
    t1=$(date +%s.%N)
    grep -E "^total" "$log_dir/dryrun_paper_slurm.log"
    python -c "print(f'paper dry run with --profile slurm: {$t1 - $t0:.1f} s')"
    say "paper scale: the sbatch line of each kind of job (the plugin's own functions)"
    python -m vcr.plan.sbatch --scale paper
}

run_mini() {
    say "mini pipeline from scratch: snakemake --cores 2"
    rm -rf work/mini results/tables/table?.* results/tables/figure2_margins.csv \
        results/figures/figure2.png results/claims.md results/claims.csv results/report \
        results/report.html
    local t0 t1
    t0=$(date +%s)
    snakemake --cores 2 >"$log_dir/mini.log" 2>&1 || {
        tail -n 40 "$log_dir/mini.log"
        return 1
    }
    t1=$(date +%s)
    echo "mini pipeline: $((t1 - t0)) s wall ($(grep -c '^Finished jobid' "$log_dir/mini.log") jobs)"
    python -m vcr.plan --check-results
    say "mini budget against the run's benchmark files (within 25 %), status, the report"
    python -m vcr.plan --budget --max-error 0.25 | tail -n 1
    python -m vcr.plan --status | head -n 12
    snakemake --report results/report.html >"$log_dir/report.log" 2>&1 || {
        tail -n 20 "$log_dir/report.log"
        return 1
    }
    python -m vcr.report --check results/report.html
}

run_study() {
    say "study slice: snakemake study on a 2 x 2 grid, both conventions (work/study_ci)"
    local cfg="$log_dir/study_ci_config.yaml"
    cat >"$cfg" <<'YAML'
work_root: work/study_ci
results_root: work/study_ci/results
study:
  alpha: [1.28, 0.16]
  beta: [0.16, 0.01]
  seeds: [0, 1]
  recipe_overrides:
    mini_convnext: {epochs: 2}
    mini_vit: {epochs: 2}
YAML
    rm -rf work/study_ci
    local t0 t1
    t0=$(date +%s)
    snakemake --cores 2 study --nolock --configfile "$cfg" >"$log_dir/study.log" 2>&1 || {
        tail -n 40 "$log_dir/study.log"
        return 1
    }
    t1=$(date +%s)
    echo "study slice: $((t1 - t0)) s wall ($(grep -c '^Finished jobid' "$log_dir/study.log") jobs)"
    python -m vcr.plan --configfile "$cfg" --check-study
}

run_slurm() {
    say "real SLURM: bring-up"
    .ci/slurm_up.sh
    trap '.ci/slurm_down.sh' EXIT
    local cfg="$log_dir/slurm_ci_config.yaml"
    # Isolated work/results folders and a tiny Fig. 2 setting; prepare_data asks for the fake
    # GPU so the --gpus path of the profile is exercised too.
    cat >"$cfg" <<'YAML'
work_root: work/slurm_ci
results_root: work/slurm_ci/results
scales:
  mini:
    two_moons:
      seeds: 0-2
      set: {epochs: 20}
YAML
    rm -rf work/slurm_ci
    say "real SLURM: snakemake --profile slurm (figure2 + one prepared dataset)"
    # Targets go before the list-valued options. The profile's partition is replaced by the
    # local one; fast status polling (3 x 2 s <= MinJobAge) keeps the test short.
    timeout -s INT -k 120 900 snakemake figure2 work/slurm_ci/mini/data/mini_color/manifest.json \
        --profile slurm --nolock --configfile "$cfg" --config scale=mini \
        --default-resources slurm_partition=main mem_mb=1000 runtime=10 disk_mb=1000 \
        --set-resources prepare_data:gpu=1 --slurm-no-account \
        --slurm-init-seconds-before-status-checks 2 --seconds-between-status-checks 2 \
        --jobs 4 --verbose >"$log_dir/slurm.log" 2>&1 || {
        tail -n 60 "$log_dir/slurm.log"
        return 1
    }
    local ids
    ids=$(grep -oE 'submitted with SLURM jobid [0-9]+' "$log_dir/slurm.log" | awk '{print $NF}')
    local n
    n=$(echo "$ids" | grep -c . || true)
    echo "sbatch job ids: $(echo $ids)"
    if [[ $n -ne 8 ]]; then
        echo "expected 8 SLURM jobs (6 two_moons, plot_figure2, prepare_data), saw $n" >&2
        return 1
    fi
    grep -q -- "--gpus=1" "$log_dir/slurm.log" || {
        echo "no sbatch line asked for a GPU (--gpus=1)" >&2
        return 1
    }
    for id in $ids; do # finished jobs stay visible for MinJobAge=300 s
        state=$(scontrol show job "$id" 2>/dev/null | grep -oE 'JobState=[A-Z]+' || true)
        echo "job $id: ${state:-gone}"
        [[ -z $state || $state == JobState=COMPLETED ]] || return 1
    done
    python -m vcr.plan --configfile "$cfg" --check-results --targets figure2
    python -m vcr.plan --configfile "$cfg" --status --slurm --targets figure2 | head -n 6
    .ci/slurm_down.sh # the rehearsal part brings up its own
    trap - EXIT
}

# One spec of each layout, checked below (RunSpec folders of the rehearsal plan).
REHEARSAL_MULTI=supervised/mini_convnext/mini_objects-sub/tv_convnext_tiny/blocks.eq2/a0.64_b0.04_lr0/seed0
REHEARSAL_SINGLE=supervised/mini_convnext/mini_objects-super/atto_superclass_200ep/blocks.eq2/a0.64_b0.04_lr0/seed0

rehearsal_snakemake() { # rehearsal_snakemake <log> <limit s> <configfile> <target...> [-- options]
    local log=$1 limit=$2 cfg=$3
    shift 3
    timeout -s INT -k 120 "$limit" snakemake "$@" --profile slurm --nolock --configfile "$cfg" \
        --config scale=rehearsal --default-resources slurm_partition=main --slurm-no-account \
        --slurm-init-seconds-before-status-checks 2 --seconds-between-status-checks 2 \
        --jobs 6 --verbose >"$log" 2>&1 || {
        tail -n 60 "$log"
        return 1
    }
}

run_rehearsal() {
    local root=work/rehearsal_ci t0 t1 t2
    say "rehearsal: a real 2-node SLURM"
    .ci/slurm_up.sh
    trap '.ci/slurm_down.sh' EXIT
    rm -rf "$root"
    mkdir -p "$root"
    cat >"$root/main.yaml" <<YAML
work_root: $root/main
results_root: $root/main/results
YAML
    t0=$(date +%s)
    say "rehearsal: every table and Fig. 2 through snakemake --profile slurm (scale=rehearsal)"
    rehearsal_snakemake "$log_dir/rehearsal.log" 3600 "$root/main.yaml" all
    t1=$(date +%s)
    echo "rehearsal pipeline: $((t1 - t0)) s wall," \
        "$(grep -c 'submitted with SLURM jobid' "$log_dir/rehearsal.log") SLURM jobs"
    python -m vcr.plan --configfile "$root/main.yaml" --scale rehearsal --check-results
    local main_runs=$root/main/rehearsal/runs
    say "rehearsal: the multi-node pretraining ($REHEARSAL_MULTI)"
    python .ci/rehearsal_check.py slurm-jobs "$log_dir/rehearsal.log" "$REHEARSAL_MULTI" --nodes 2
    python .ci/rehearsal_check.py layout "$main_runs/$REHEARSAL_MULTI" 2 2

    # The same spec on one node with 4 processes, and two preempted runs, all at once. A time
    # limit of 3 min and SIGURG 60 s before it: the signal comes 120 s into the SLURM job, i.e.
    # 120 - S s into training, S the start-up (srun, torchrun, imports: 8-36 s measured, the
    # most under load). At 14 s per step (2 epochs x 5 steps) a signal in [70, 126) s lands in
    # steps 6-9, mid-epoch 2, so any S up to ~50 s checkpoints mid-epoch (12 s per step needed
    # S >= 12: a CI run with S = 8 saw it in the epoch's last step; 16 s needed S <= 40). The
    # retry resumes with <= 4 steps left, done before its own signal.
    cat >"$root/single4.yaml" <<YAML
work_root: $root/single4
results_root: $root/single4/results
scales:
  rehearsal:
    resources:
      "pretrain:tv_convnext_tiny": {nodes: 1, gpu: 4}
YAML
    for layout in single multi; do
        local recipe=tv_convnext_tiny
        [[ $layout == single ]] && recipe=atto_superclass_200ep
        cat >"$root/preempt_$layout.yaml" <<YAML
work_root: $root/preempt_$layout
results_root: $root/preempt_$layout/results
scales:
  rehearsal:
    recipe_overrides:
      $recipe: {slow_step_s: 14}
    resources:
      "pretrain:$recipe": {runtime: 3, slurm_extra: "--signal=URG@60"}
YAML
    done
    say "rehearsal: 1 x 4 processes of the same spec; preemption single-node and 2-node"
    local pids=()
    rehearsal_snakemake "$log_dir/rehearsal_single4.log" 1200 "$root/single4.yaml" \
        "$root/single4/rehearsal/runs/$REHEARSAL_MULTI/backbone.pt" &
    pids+=($!)
    rehearsal_snakemake "$log_dir/rehearsal_preempt_single.log" 2400 "$root/preempt_single.yaml" \
        "$root/preempt_single/rehearsal/runs/$REHEARSAL_SINGLE/backbone.pt" --retries 5 &
    pids+=($!)
    rehearsal_snakemake "$log_dir/rehearsal_preempt_multi.log" 2400 "$root/preempt_multi.yaml" \
        "$root/preempt_multi/rehearsal/runs/$REHEARSAL_MULTI/backbone.pt" --retries 5 &
    pids+=($!)
    local failed=0
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    [[ $failed -eq 0 ]] || return 1
    python .ci/rehearsal_check.py slurm-jobs "$log_dir/rehearsal_single4.log" "$REHEARSAL_MULTI"
    python .ci/rehearsal_check.py layout "$root/single4/rehearsal/runs/$REHEARSAL_MULTI" 1 4
    echo "2 nodes x 2 processes vs 1 node x 4 processes:"
    python .ci/rehearsal_check.py same-weights "$main_runs/$REHEARSAL_MULTI" \
        "$root/single4/rehearsal/runs/$REHEARSAL_MULTI"
    for layout in single multi; do
        local run=$REHEARSAL_SINGLE nodes=1
        [[ $layout == multi ]] && run=$REHEARSAL_MULTI nodes=2
        echo "preempted ($layout-node): $run"
        python .ci/rehearsal_check.py slurm-jobs "$log_dir/rehearsal_preempt_$layout.log" "$run" \
            --nodes $nodes --min-jobs 2
        python .ci/rehearsal_check.py preempted "$root/preempt_$layout/rehearsal/runs/$run"
        python .ci/rehearsal_check.py same-weights "$main_runs/$run" \
            "$root/preempt_$layout/rehearsal/runs/$run"
    done
    t2=$(date +%s)
    echo "rehearsal part: $((t2 - t0)) s wall (pipeline $((t1 - t0)) s, checks $((t2 - t1)) s)"
    .ci/slurm_down.sh
    trap - EXIT
}

for part in "${parts[@]}"; do
    case $part in
    dryrun) run_dryrun ;;
    mini) run_mini ;;
    study) run_study ;;
    slurm) run_slurm ;;
    rehearsal) run_rehearsal ;;
    *)
        echo "unknown part '$part' (dryrun | mini | study | slurm | rehearsal)" >&2
        exit 2
        ;;
    esac
done
say "pipeline checks passed: ${parts[*]}"
