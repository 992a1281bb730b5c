# Stage 2b: self-supervised pretraining (Table 4: SimCLR / VICReg on ResNet-50, 100 epochs).
# Same trainer and run-folder rules as rules/pretrain.smk; separate so the multi-node resources
# and the LARS recipes live apart from the supervised runs.


rule pretrain_ssl:
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
        run=r"(simclr|vicreg)/[^/]+(/[^/]+){5}",
    params:
        args=F(lambda wc: PLAN.pretrain_args(wc.run)),
        launch=F(lambda wc: PLAN.launcher(PLAN.pretrain_resources(wc.run))),
    threads: 1
    conda:
        "../envs/vcr.yaml"
    resources:
        **PLAN.rule_resources("pretrain_ssl"),
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {params.launch} workflow_scripts/pretrain.py --out $(dirname {output.backbone})"
        " {params.args} --threads {threads} >> {log} 2>&1"
