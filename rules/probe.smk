# Stage 3: evaluation of a pretrained backbone. One job per (run, protocol, group of eval
# datasets): per dataset or all of a run's datasets of one protocol in one process (config
# probe_grouping). Records: work/<scale>/runs/<run>/eval/<protocol>-<datasets>.json. Features
# are cached per run under work/<scale>/features/<run>/.


rule probe:
    input:
        backbone=f"{WORK}/runs/{{run}}/backbone.pt",
        manifests=probe_manifests,
    output:
        f"{WORK}/runs/{{run}}/eval/{{protocol}}-{{evalname}}.json",
    benchmark:
        f"{WORK}/benchmarks/probe/{{run}}/{{protocol}}-{{evalname}}.tsv"
    log:
        f"{WORK}/logs/probe/{{run}}/{{protocol}}-{{evalname}}.log",
    params:
        datasets=probe_datasets,
        settings=probe_settings,
        cache=feature_cache,
        device=probe_device,
    threads: 1
    conda:
        "../envs/vcr.yaml"
    resources:
        **job_resources("probe"),
    shell:
        "python workflow_scripts/probe.py --run $(dirname {input.backbone})"
        " --protocol {wildcards.protocol} --eval-dataset {params.datasets}"
        " --manifest {input.manifests} --set {params.settings:q}"
        " --feature-cache {params.cache} --out {output} --device {params.device}"
        " --threads {threads} > {log} 2>&1"


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
        dataset=classifier_dataset,
    threads: 1
    conda:
        "../envs/vcr.yaml"
    resources:
        **job_resources("classifier_metric"),
    shell:
        "python workflow_scripts/classifier_metric.py --run $(dirname {input.final})"
        " --dataset {params.dataset} --out {output} > {log} 2>&1"
