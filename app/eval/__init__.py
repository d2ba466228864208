"""Rate–distortion evaluation (``python -m app eval``), one concern per module.

========================  ==================================================================
module                    concern
========================  ==================================================================
`app.eval.schema`         results.csv: the columns, the typed `Row`, reading and writing it
`app.eval.io`             the image folder, image files and the captions JSON
`app.eval.captions`       caption policies (``--caption-mode``)
`app.eval.rates`          default rates and the ``--rates`` syntax
`app.eval.measure`        loading a codec by name; one codec on one image → a `Row`
`app.eval.units`          the plan, its work units, and the per-rank shard files
`app.eval.distributed`    sharding over the processes torchrun started
`app.eval.provenance`     which weights / encoder made each (codec, rate) column
`app.eval.bdrate`         per-point means, BD-rate, the comparison at matched bpp
`app.eval.report`         report.md
`app.eval.plots`          rd_plots.html and rd_plots.png
`app.eval.runner`         `run_eval`: measure, then write every output
`app.eval.cli`            the command line
========================  ==================================================================
"""
