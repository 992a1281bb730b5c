# Stage 4: analyses beside the probes: neural-collapse and MI metrics of a run (Table 5) and
# the two-moons toy (Fig. 2).


rule collapse:
    input:
        backbone=f"{WORK}/runs/{{run}}/backbone.pt",
        final=f"{WORK}/runs/{{run}}/final.json",
        manifest=collapse_manifest,
    output:
        cdnv=f"{WORK}/runs/{{run}}/eval/collapse/cdnv.json",
        ncc=f"{WORK}/runs/{{run}}/eval/collapse/ncc.json",
        mi=f"{WORK}/runs/{{run}}/eval/collapse/mi.json",
    benchmark:
        f"{WORK}/benchmarks/collapse/{{run}}.tsv"
    log:
        f"{WORK}/logs/collapse/{{run}}.log",
    params:
        settings=collapse_settings,
        cache=feature_cache,
        device=PLAN.device("collapse"),
    threads: 1
    conda:
        "../envs/vcr.yaml"
    resources:
        **job_resources("collapse"),
    shell:
        "python workflow_scripts/collapse_metrics.py --run $(dirname {input.backbone})"
        " --manifest {input.manifest} --out-dir $(dirname {output.cdnv})"
        " --set {params.settings:q} --feature-cache {params.cache} --device {params.device}"
        " --threads {threads}"
        " > {log} 2>&1"


rule two_moons:
    output:
        f"{WORK}/two_moons/{{method}}.pt",
    benchmark:
        f"{WORK}/benchmarks/two_moons/{{method}}.tsv"
    log:
        f"{WORK}/logs/two_moons/{{method}}.log",
    params:
        seeds=PLAN.two_moons_seeds(),
        settings=PLAN.two_moons_sets(),
    threads: 1
    conda:
        "../envs/vcr.yaml"
    resources:
        **job_resources("two_moons"),
    shell:
        "python workflow_scripts/two_moons.py --method {wildcards.method} --seeds {params.seeds}"
        " --set {params.settings:q} --out {output} --threads {threads} > {log} 2>&1"
