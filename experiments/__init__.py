"""The `make models` experiment and its ablation: pinned assets, datasets, the pipeline, the report.

Built on the training library (training/); nothing in training/ imports from here.
"""
