"""Detection-quality evaluation of agent configurations on labelled datasets (workstation side).

`python -m tools.evaluate --help`; the pipeline replay is in `replay`, metrics in `metrics`, the NAB
scoring rules in `nab_score`, dataset loaders in `datasets`, per-dataset runs in `runs`.
"""
