# Stage 5: the published outputs. A table spec (CONTRACT section 7, written by vcr.plan) plus the
# metric records of that table -> results/tables/<table>.{md,tex,csv}; the two-moons files ->
# Fig. 2. Selection of alpha/beta/lr happens inside the renderer, on validation metrics only.


localrules:
    table_spec,


rule table_spec:
    output:
        f"{WORK}/tables/{{table}}.json",
    log:
        f"{WORK}/logs/table_spec/{{table}}.log",
    params:
        # the spec's content is a param, so a plan change reruns this rule (and the render)
        spec=F(lambda wc: PLAN.tables[wc.table].spec),
    run:
        PLAN.write_spec(wildcards.table, output[0], log=log[0])


rule render_table:
    input:
        spec=f"{WORK}/tables/{{table}}.json",
        records=F(lambda wc: PLAN.tables[wc.table].records),
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
    benchmark:
        f"{WORK}/benchmarks/render_table/{{table}}.tsv"
    log:
        f"{WORK}/logs/render_table/{{table}}.log",
    params:
        prefix=F(lambda wc: f"{PLAN.results}/tables/{wc.table}"),
    threads: 1
    conda:
        "../envs/vcr.yaml"
    resources:
        **PLAN.rule_resources("render_table"),
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} python workflow_scripts/render_table.py --spec {input.spec} --records {input.records}"
        " --out-prefix {params.prefix} > {log} 2>&1"


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
        **PLAN.rule_resources("plot_figure2"),
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} python workflow_scripts/figure2.py --inputs {input.runs} --out {output.fig}"
        " --margins {output.margins} > {log} 2>&1"
