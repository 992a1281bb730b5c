# Stage 2: pretraining, one job per RunSpec (run folder = RunSpec.relpath()): supervised,
# superclass and long-tail runs, SimCLR/VICReg (Table 4), and the Table 1 baselines imported from
# torchvision's released weights at paper scale (pretrain.py --init-weights FILE --set epochs=0;
# the file is checked by the trainer at run time, so a dry run works without it).
# The trainer resumes from checkpoint.pt (not a declared output, so Snakemake keeps it across
# failures); a SLURM retry or a rerun continues where the last attempt stopped. backbone.pt is
# written last, only on success. Where the scale sets probe_in_pretrain (mini), the job then runs
# the run's probe jobs itself and stages their records for them (vcr/probe_staging.py).


rule pretrain:
    input:
        manifest=pretrain_manifest,
        probe_manifests=pretrain_probe_manifests,
    output:
        backbone=f"{WORK}/runs/{{run}}/backbone.pt",
        final=f"{WORK}/runs/{{run}}/final.json",
    benchmark:
        f"{WORK}/benchmarks/pretrain/{{run}}.tsv"
    log:
        f"{WORK}/logs/pretrain/{{run}}.log",
    params:
        launch=pretrain_launcher,
        device=pretrain_device,
        run=pretrain_spec,
        init_weights=pretrain_init_weights,
        recipe_overrides=pretrain_overrides,
        then_probe=pretrain_then_probe,
    threads: 1
    conda:
        "../envs/vcr.yaml"
    resources:
        **job_resources("pretrain"),
    shell:
        "{params.launch} workflow_scripts/pretrain.py --out $(dirname {output.backbone})"
        " --scale {params.run.scale} --method {params.run.method} --arch {params.run.arch}"
        " --dataset {params.run.dataset} --target {params.run.target}"
        " --recipe {params.run.recipe} --placement {params.run.placement}"
        " --alpha {params.run.alpha} --beta {params.run.beta} --lr {params.run.lr}"
        " --seed {params.run.seed} --cov-scale {params.run.cov_scale} --delta {params.run.delta}"
        " --init {params.run.init}"
        " --manifest {input.manifest} --init-weights={params.init_weights:q}"
        " --set {params.recipe_overrides:q} --then-probe={params.then_probe:q}"
        " --device {params.device} --threads {threads}"
        " >> {log} 2>&1"
