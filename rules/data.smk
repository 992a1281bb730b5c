# Stage 1: datasets. Real datasets are verified under config data_root (README "Data" says where
# each goes and how to obtain it); the mini datasets are generated. Output: a manifest.


rule prepare_data:
    output:
        f"{WORK}/data/{{dataset}}/manifest.json",
    benchmark:
        f"{WORK}/benchmarks/prepare_data/{{dataset}}.tsv"
    log:
        f"{WORK}/logs/prepare_data/{{dataset}}.log",
    params:
        data_root=PLAN.data_root,
    threads: 1
    conda:
        "../envs/vcr.yaml"
    resources:
        **job_resources("prepare_data"),
    shell:
        "python workflow_scripts/prepare_data.py --dataset {wildcards.dataset}"
        " --data-root {params.data_root} --out $(dirname {output}) > {log} 2>&1"
