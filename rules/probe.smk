# Stage 3: evaluation of a pretrained backbone. One job per (run, protocol, group of eval
# datasets): per dataset at paper scale, all stand-ins of a run in one process at mini scale
# (config probe_grouping). Records: work/<scale>/runs/<run>/eval/<protocol>-<datasets>.json.
# Features are cached per run under work/<scale>/features/<run>/.


rule probe:
    input:
        backbone=f"{WORK}/runs/{{run}}/backbone.pt",
        manifests=F(lambda wc: PLAN.probe_manifests(WORK, wc.run, wc.protocol, wc.evalname)),
    output:
        f"{WORK}/runs/{{run}}/eval/{{protocol}}-{{evalname}}.json",
    benchmark:
        f"{WORK}/benchmarks/probe/{{run}}/{{protocol}}-{{evalname}}.tsv"
    log:
        f"{WORK}/logs/probe/{{run}}/{{protocol}}-{{evalname}}.log",
    params:
        args=F(lambda wc, output: PLAN.probe_args(output[0])),
        cache=F(lambda wc: f"{WORK}/features/{wc.run}"),
    threads: 1
    conda:
        "../envs/vcr.yaml"
    resources:
        **PLAN.rule_resources("probe"),
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} python workflow_scripts/probe.py --run $(dirname {input.backbone}) {params.args}"
        " --feature-cache {params.cache} --out {output} --threads {threads} > {log} 2>&1"


# Table 3: the pretraining run's own classifier on its test set (final.json) as a record.
rule classifier_metric:
    input:
        final=f"{WORK}/runs/{{run}}/final.json",
    output:
        f"{WORK}/runs/{{run}}/eval/classifier-{{evalname}}.json",
    benchmark:
        f"{WORK}/benchmarks/classifier_metric/{{run}}/{{evalname}}.tsv"
    log:
        f"{WORK}/logs/classifier_metric/{{run}}/{{evalname}}.log",
    params:
        dataset=F(lambda wc, output: PLAN.eval_dataset(output[0])),
    threads: 1
    conda:
        "../envs/vcr.yaml"
    resources:
        **PLAN.rule_resources("classifier_metric"),
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} python workflow_scripts/classifier_metric.py --run $(dirname {input.final})"
        " --dataset {params.dataset} --out {output} > {log} 2>&1"
