# The eq. 2 / Algorithm 1 study (config `study`, vcr/plan/study.py; README "The eq. 2 /
# Algorithm 1 study"). Not a paper table and not part of `all`:
#   study   prepare_data (mini_objects + the probe sets) -> study_cell (per arch x (baseline +
#           each convention x alpha x beta): its seeds' runs, recipe mini_study, each trained
#           and then probed (lbfgs, every probe set) in one process) -> study_spec ->
#           study_report (results/study/)
# A cell writes exactly the run folders and probe records the `pretrain` and `probe` rules would
# (the same vcr calls; vcr/study_cell.py), in one process instead of six: at the mini scale a
# process costs ~3 CPU s of start-up, and the study has 246 runs (README "The eq. 2 /
# Algorithm 1 study"). The ruleorder gives the study's files to study_cell; every other run
# stays with pretrain and probe.

import re

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

    rule study_cell:
        input:
            manifests=study_cell_manifests,
        output:
            backbones=[f"{WORK}/runs/{{cell}}/{m}/backbone.pt" for m in PLAN.study.cell_members()],
            finals=[f"{WORK}/runs/{{cell}}/{m}/final.json" for m in PLAN.study.cell_members()],
            records=[
                f"{WORK}/runs/{{cell}}/{m}/eval/{PLAN.study.record_name}"
                for m in PLAN.study.cell_members()
            ],
        wildcard_constraints:
            # exactly the study's cells: the tables' runs never match this rule
            cell="|".join(re.escape(c) for c in PLAN.study.cells),
        benchmark:
            f"{WORK}/benchmarks/study_cell/{{cell}}.tsv"
        log:
            f"{WORK}/logs/study_cell/{{cell}}.log",
        params:
            cell=study_cell_job,
        threads: 1
        conda:
            "../envs/vcr.yaml"
        resources:
            **job_resources("study_cell"),
        shell:
            "python workflow_scripts/study_cell.py --cell {params.cell:q} --threads {threads}"
            " >> {log} 2>&1"

    ruleorder: study_cell > pretrain
    ruleorder: study_cell > probe

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
