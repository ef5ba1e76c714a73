"""Training and evaluation of skeleton action recognition models.

    load_config(path, overrides)          a YAML configuration, checked, with defaults
    train(config, out_dir, resume=False)  a run: log, metrics and resumable checkpoints
    evaluate_run(run_dir, data=None)      the metrics of a finished run's checkpoint
"""

from skelang.train.config import load_config, resolve_config
from skelang.train.metrics import classification_metrics, evaluate
from skelang.train.trainer import evaluate_run, train

__all__ = ["classification_metrics", "evaluate", "evaluate_run", "load_config", "resolve_config", "train"]
