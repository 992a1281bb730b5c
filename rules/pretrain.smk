# Stage 2: supervised pretraining, one job per RunSpec (run folder = RunSpec.relpath()).
# The trainer resumes from checkpoint.pt (not a declared output, so Snakemake keeps it across
# failures); a SLURM retry or a rerun continues where the last attempt stopped. backbone.pt is
# written last, only on success.


rule pretrain:
    input:
        manifest=F(lambda wc: PLAN.pretrain_job(wc.run).manifest),
    output:
        backbone=f"{WORK}/runs/{{run}}/backbone.pt",
        final=f"{WORK}/runs/{{run}}/final.json",
    benchmark:
        f"{WORK}/benchmarks/pretrain/{{run}}.tsv"
    log:
        f"{WORK}/logs/pretrain/{{run}}.log",
    wildcard_constraints:
        run=r"supervised/[^/]+(/[^/]+){5}",
    params:
        args=F(lambda wc: PLAN.pretrain_args(wc.run)),
        launch=F(lambda wc: PLAN.launcher(PLAN.pretrain_resources(wc.run))),
    threads: 1
    conda:
        "../envs/vcr.yaml"
    resources:
        **PLAN.rule_resources("pretrain"),
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {params.launch} workflow_scripts/pretrain.py --out $(dirname {output.backbone})"
        " {params.args} --threads {threads} >> {log} 2>&1"


# Table 1 baselines at paper scale: the released torchvision weights, imported into a run folder
# (pretrain.py --init-weights FILE --set epochs=0) so they are probed like any other run. The
# weights file is checked by the trainer at run time, so a dry run works without it.
rule import_weights:
    input:
        manifest=F(lambda wc: PLAN.pretrain_job(wc.run).manifest),
    output:
        backbone=f"{WORK}/runs/{{run}}/backbone.pt",
        final=f"{WORK}/runs/{{run}}/final.json",
    benchmark:
        f"{WORK}/benchmarks/pretrain/{{run}}.tsv"
    log:
        f"{WORK}/logs/pretrain/{{run}}.log",
    wildcard_constraints:
        run=PLAN.imported_runs_regex(),
    params:
        args=F(lambda wc: PLAN.pretrain_args(wc.run)),
    threads: 1
    conda:
        "../envs/vcr.yaml"
    resources:
        **PLAN.rule_resources("import_weights"),
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} python workflow_scripts/pretrain.py --out $(dirname {output.backbone})"
        " {params.args} --threads {threads} >> {log} 2>&1"


ruleorder: import_weights > pretrain
