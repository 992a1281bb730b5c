# Stage 5: the published outputs. A table spec (CONTRACT section 7, written by vcr.plan) plus the
# metric records of that table -> results/tables/<table>.{md,tex,csv}; the two-moons files ->
# Fig. 2. Selection of alpha/beta/lr happens inside the renderer, on validation metrics only.
#
# Each table's chain (what `snakemake tableN` runs; the design is vcr/design.yaml):
#   table1  prepare_data (ImageNet, 8 transfer sets) -> pretrain (ResNet-50, ConvNeXt-T,
#           ViT-B/32 +- VCR; baselines imported from torchvision at paper scale) -> probe (sgd:
#           iNat18, Places205; lbfgs: the 6 others) -> table_spec -> render_table
#   table2  prepare_data (6 superclass datasets) -> pretrain (ConvNeXt-Atto +- VCR on */super)
#           -> probe (adamw on */sub) -> table_spec -> render_table
#   table3  prepare_data (CIFAR-10/100-LT) -> pretrain (ResNet-32 +- VCR) -> classifier_metric
#           (the run's own test accuracy) -> table_spec -> render_table
#   table4  prepare_data (ImageNet, IN-1%, 8 transfer sets) -> pretrain (SimCLR, VICReg +- VCR)
#           -> probe (finetune: IN-1%; sgd; lbfgs) -> table_spec -> render_table
#   table5  Table 1's ConvNeXt-T runs -> collapse (CDNV, NCC, MI) -> table_spec -> render_table
#   table6  prepare_data (ImageNet, 6 transfer sets) -> pretrain (ConvNeXt-Atto, VCR1-4) -> probe
#           (lbfgs) -> table_spec -> render_table
#   figure2 two_moons (6 methods) -> plot_figure2
#   claims  every table's records and spec + the two-moons files -> claims_ledger
#           (results/claims.{md,csv})
#
# Each table is rendered under the configured selection rule (config `selection`, vcr.select)
# into results/tables/<table>.{md,tex,csv}, and under the other rule beside it, into
# results/tables/<table>.<rule>.{md,tex,csv}: the per_cell rule lets every VCR cell pick its
# own (alpha, beta, lr), per_row one per row.
#
# Every table also gets report_figures (its heatmap, curves and page for `snakemake --report`).


localrules:
    table_spec,


rule table_spec:
    output:
        f"{WORK}/tables/{{table}}.json",
    log:
        f"{WORK}/logs/table_spec/{{table}}.log",
    params:
        # the spec's content is a param, so a plan change reruns this rule (and the render)
        spec=table_spec,
    run:
        PLAN.write_spec(wildcards.table, output[0], log=log[0])


rule render_table:
    input:
        spec=f"{WORK}/tables/{{table}}.json",
        records=table_records,
        # the renderer's code: a change to it reruns only the rendering jobs
        code=vcr_plan.RENDER_CODE,
    output:
        report(
            f"{PLAN.results}/tables/{{table}}.md",
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{table}", "format": "markdown"},
        ),
        f"{PLAN.results}/tables/{{table}}.tex",
        report(
            f"{PLAN.results}/tables/{{table}}.csv",
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{table}", "format": "csv"},
        ),
        *[
            f"{PLAN.results}/tables/{{table}}.{rule}.{ext}"
            for rule in PLAN.other_selections
            for ext in ("md", "tex", "csv")
        ],
    benchmark:
        f"{WORK}/benchmarks/render_table/{{table}}.tsv"
    log:
        f"{WORK}/logs/render_table/{{table}}.log",
    params:
        prefix=lambda wc: f"{PLAN.results}/tables/{wc.table}",
        selection=PLAN.selection,
        also=lambda wc: [
            f"{rule}={PLAN.results}/tables/{wc.table}.{rule}" for rule in PLAN.other_selections
        ],
    threads: 1
    conda:
        "../envs/vcr.yaml"
    resources:
        **job_resources("render_table"),
    shell:
        "python workflow_scripts/render_table.py --spec {input.spec} --records {input.records}"
        " --out-prefix {params.prefix} --selection {params.selection} --also {params.also:q}"
        " > {log} 2>&1"


# The report's view of a table: one job draws its heatmap and curves and writes its page
# (vcr.report). It reads the same records as render_table, plus the runs' log.jsonl (final.json
# as the input: the log is complete once the run is).
rule report_figures:
    input:
        spec=f"{WORK}/tables/{{table}}.json",
        records=table_records,
        finals=table_finals,
        code=vcr_plan.REPORT_CODE,
    output:
        page=report_item("page", f"{PLAN.results}/report/{{table}}.html"),
        heatmap=report_item("heatmap", f"{PLAN.results}/report/{{table}}_heatmap.png"),
        curves=report_item("curves", f"{PLAN.results}/report/{{table}}_curves.png"),
    benchmark:
        f"{WORK}/benchmarks/report_figures/{{table}}.tsv"
    log:
        f"{WORK}/logs/report_figures/{{table}}.log",
    params:
        prefix=lambda wc: f"{PLAN.results}/report/{wc.table}",
        runs=f"{WORK}/runs",
    threads: 1
    conda:
        "../envs/vcr.yaml"
    resources:
        **job_resources("report_figures"),
    shell:
        "python workflow_scripts/report_figures.py --spec {input.spec} --records {input.records}"
        " --runs-root {params.runs} --out-prefix {params.prefix} > {log} 2>&1"


rule plot_figure2:
    input:
        runs=list(PLAN.two_moons.values()),
        code=vcr_plan.FIGURE_CODE,
    output:
        fig=report(
            f"{PLAN.results}/figures/figure2.png",
            caption="../report/figure2.rst",
            category="Figures",
        ),
        margins=f"{PLAN.results}/tables/figure2_margins.csv",
    benchmark:
        f"{WORK}/benchmarks/plot_figure2.tsv"
    log:
        f"{WORK}/logs/figure2.log",
    threads: 1
    conda:
        "../envs/vcr.yaml"
    resources:
        **job_resources("plot_figure2"),
    shell:
        "python workflow_scripts/figure2.py --inputs {input.runs} --out {output.fig}"
        " --margins {output.margins} > {log} 2>&1"


# The claims ledger: one row per claim of the paper (each table's VCR effect per column, Table
# 5's directions, Table 6's best placement, Fig. 2's largest margin), ours with n and a t
# interval over seeds, and a verdict (vcr.claims). From the records, never from the tables.
rule claims_ledger:
    input:
        specs=[PLAN.spec_path(t) for t in names.TABLES],
        records=PLAN.claims_records(),
        two_moons=list(PLAN.two_moons.values()),
        code=vcr_plan.CLAIMS_CODE,
    output:
        md=report_claims(f"{PLAN.results}/claims.md"),
        csv=f"{PLAN.results}/claims.csv",
    benchmark:
        f"{WORK}/benchmarks/claims.tsv"
    log:
        f"{WORK}/logs/claims.log",
    params:
        selection=PLAN.selection,
    threads: 1
    conda:
        "../envs/vcr.yaml"
    resources:
        **job_resources("claims_ledger"),
    shell:
        "python workflow_scripts/claims.py --specs {input.specs} --records {input.records}"
        " --two-moons {input.two_moons} --selection {params.selection}"
        " --out-md {output.md} --out-csv {output.csv} > {log} 2>&1"
