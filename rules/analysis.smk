# Stage 4: analyses beside the probes: neural-collapse and MI metrics of a run (Table 5) and
# the two-moons toy (Fig. 2).


rule collapse:
    input:
        backbone=f"{WORK}/runs/{{run}}/backbone.pt",
        final=f"{WORK}/runs/{{run}}/final.json",
        manifest=F(lambda wc: PLAN.eval_job(f"{WORK}/runs/{wc.run}/eval/collapse/cdnv.json").manifests),
    output:
        cdnv=f"{WORK}/runs/{{run}}/eval/collapse/cdnv.json",
        ncc=f"{WORK}/runs/{{run}}/eval/collapse/ncc.json",
        mi=f"{WORK}/runs/{{run}}/eval/collapse/mi.json",
    benchmark:
        f"{WORK}/benchmarks/collapse/{{run}}.tsv"
    log:
        f"{WORK}/logs/collapse/{{run}}.log",
    params:
        sets=F(lambda wc, output: PLAN.eval_set_args(output.cdnv)),
        cache=F(lambda wc: f"{WORK}/features/{wc.run}"),
    threads: 1
    conda:
        "../envs/vcr.yaml"
    resources:
        **PLAN.rule_resources("collapse"),
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} python workflow_scripts/collapse_metrics.py --run $(dirname {input.backbone})"
        " --manifest {input.manifest} --out-dir $(dirname {output.cdnv}) {params.sets}"
        " --feature-cache {params.cache} --threads {threads}"
        " > {log} 2>&1"


rule two_moons:
    output:
        f"{WORK}/two_moons/{{method}}.pt",
    benchmark:
        f"{WORK}/benchmarks/two_moons/{{method}}.tsv"
    log:
        f"{WORK}/logs/two_moons/{{method}}.log",
    params:
        args=PLAN.two_moons_args(),
    threads: 1
    conda:
        "../envs/vcr.yaml"
    resources:
        **PLAN.rule_resources("two_moons"),
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} python workflow_scripts/two_moons.py --method {wildcards.method} {params.args}"
        " --out {output} --threads {threads} > {log} 2>&1"
