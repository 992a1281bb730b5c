# The eq. 2 / Algorithm 1 study (config `study`, vcr/plan/study.py; README "The eq. 2 /
# Algorithm 1 study"). Not a paper table and not part of `all`:
#   study   prepare_data (mini_objects + the probe sets) -> pretrain (every arch x (baseline +
#           each convention x alpha x beta) x seeds, recipe mini_study) -> probe (lbfgs: every
#           probe set of a run in one job) -> study_spec -> study_report (results/study/)
# The runs and probes are the `pretrain` and `probe` rules' jobs; only the report is new.

if PLAN.study is not None:

    localrules:
        study_spec,

    rule study_spec:
        output:
            f"{WORK}/study/spec.json",
        log:
            f"{WORK}/logs/study_spec.log",
        params:
            # the spec's content is a param, so a plan change reruns this rule (and the report)
            spec=PLAN.study.spec(),
        run:
            PLAN.study.write_spec(output[0], log=log[0])

    rule study_report:
        input:
            spec=f"{WORK}/study/spec.json",
            finals=PLAN.study.finals,
            records=PLAN.study.records,
            # the analysis code: a change to it reruns only this job
            code=vcr_plan.STUDY_CODE,
        output:
            tables=PLAN.study.outputs()["tables"],
            heatmaps=[
                report(p, caption="../report/study.rst", category="Study")
                for p in PLAN.study.outputs()["heatmaps"]
            ],
        benchmark:
            f"{WORK}/benchmarks/study_report.tsv"
        log:
            f"{WORK}/logs/study_report.log",
        threads: 1
        conda:
            "../envs/vcr.yaml"
        resources:
            **job_resources("study_report"),
        shell:
            "python workflow_scripts/study_report.py --spec {input.spec}"
            " --out-dir $(dirname {output.tables[0]}) > {log} 2>&1"


rule study:
    input:
        study_outputs,
