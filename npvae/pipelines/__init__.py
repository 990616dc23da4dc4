"""End-to-end pipelines: data, training step, evaluation and figures for each task."""
