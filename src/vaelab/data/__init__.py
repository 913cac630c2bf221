"""Datasets: the registry (datasets.py), where files come from (sources.py), IDX parsing, tensors in memory (images.py)."""
