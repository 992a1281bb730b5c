#!/usr/bin/env bash
# Pipeline checks (called by .ci/run after the unit tests; each part can run alone):
#
#   .ci/pipeline_checks.sh [dryrun] [mini] [slurm]     # default: all three
#
#   dryrun  `snakemake -n` at the mini, cifar and paper scales with the per-table job counts
#           asserted (tests/test_pipeline_dryrun.py), `snakemake --lint`, and the timed paper
#           dry run through the slurm profile.
#   mini    the whole mini pipeline from scratch (`snakemake --cores 2`, the README's main job),
#           then every table and Fig. 2 checked for content (no planned cell may be missing),
#           the budget held to the run's benchmark files (25 %), --status, and the report
#           built and checked for every table's page, heatmap and curves.
#   slurm   a real one-node SLURM (.ci/slurm_up.sh), a small mini-scale target run through
#           `snakemake --profile slurm`, the jobs checked to have gone through sbatch and
#           completed, then .ci/slurm_down.sh. Needs root and apt (Debian/Ubuntu).
set -euo pipefail
cd "$(dirname "$0")/.."

parts=("$@")
[[ ${#parts[@]} -eq 0 ]] && parts=(dryrun mini slurm)
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
}

run_mini() {
    say "mini pipeline from scratch: snakemake --cores 2"
    rm -rf work/mini results/tables/table?.* results/tables/figure2_margins.csv \
        results/figures/figure2.png results/report results/report.html
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
}

for part in "${parts[@]}"; do
    case $part in
    dryrun) run_dryrun ;;
    mini) run_mini ;;
    slurm) run_slurm ;;
    *)
        echo "unknown part '$part' (dryrun | mini | slurm)" >&2
        exit 2
        ;;
    esac
done
say "pipeline checks passed: ${parts[*]}"
