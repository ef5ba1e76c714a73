"""Stage `encoder`: a skeleton encoder with its classification head, and what every stage
that trains an encoder shares (SSF and VST build on it: skelang.runs.stages.ssf, .vst).

Their checkpoint holds the model's weights and what rebuilding it needs (num_classes,
in_channels, layout and layout_definition, num_bodies); their final evaluation writes scores.npz (per-sample ids,
labels, logits) beside metrics.json.
"""

from __future__ import annotations

import collections

import numpy as np
import torch

from skelang.data.cache import SequenceCache, is_cache
from skelang.data.dataset import SkeletonDataset, make_loader
from skelang.data.layouts import ensure_layout, layout_names, layout_to_dict
from skelang.data.preprocess import Augmentation, Preprocess
from skelang.data.readers import open_sequences
from skelang.data.splits import split_of
from skelang.encoder import build_model
from skelang.runs.config import format_override
from skelang.runs.directory import CHECKPOINT, RunDirectory
from skelang.runs.metrics import classification_metrics
from skelang.runs.stages.base import Stage, StepOutput

SHAPE_KEYS = ("num_classes", "in_channels", "layout", "num_bodies")


def make_preprocess(data: dict) -> Preprocess:
    """The Preprocess of a config's data section."""
    return Preprocess(
        num_frames=data["num_frames"],
        normalize=data["normalize"],
        rotate=data["rotate"],
        scale=data["scale"],
        minmax=data["minmax"],
        sampling=data["sampling"],
        train_crop=tuple(data["train_crop"]),
        eval_crop=data["eval_crop"],
        streams=tuple(data["streams"]),
        augmentation=Augmentation(**data["augmentation"]),
    )


# The data keys that decide what a trained encoder sees at evaluation.
ENCODER_INPUT_KEYS = ("streams", "num_frames", "sampling", "eval_crop", "normalize", "rotate", "scale", "minmax")


def check_encoder_inputs(data: dict, run, key: str) -> None:
    """A stage that runs the frozen encoder of `run` (named by the config key `key`) must give it
    its inputs as that run's data section made them: a ValueError names every key that differs
    and the value to set. Without it the encoder's features are computed from inputs it was
    never trained on, and every later number is silently wrong."""
    theirs = run.config["data"]
    keys = list(ENCODER_INPUT_KEYS)
    if theirs.get("sampling") == data.get("sampling") == "index":
        keys.remove("eval_crop")  # evenly spaced frames: no crop
    if not theirs.get("normalize") and not data.get("normalize"):
        keys.remove("rotate")  # parts of the normalisation
        keys.remove("scale")
    differ = [name for name in keys if theirs.get(name) != data.get(name)]
    if differ:
        wanted = ", ".join(format_override(f"data.{name}", theirs.get(name)) for name in differ)
        found = ", ".join(format_override(f"data.{name}", data.get(name)) for name in differ)
        raise ValueError(
            f"{key}: {run.path} was trained on inputs made with {wanted}; this config has {found}. "
            f"Its frozen encoder needs the inputs it was trained on: set {wanted}"
        )


def checkpoint_layout(run: RunDirectory, checkpoint: dict) -> str:
    """The name of a run's skeleton layout, registered from the checkpoint's definition when it
    was made at run time (a user's layout, a BVH hierarchy). A run of an earlier version kept
    only the name: its training data's cache is opened for the definition, else a ValueError
    says what to do."""
    name = checkpoint["layout"]
    if name in layout_names():
        return name
    if "layout_definition" in checkpoint:
        return ensure_layout(checkpoint["layout_definition"]).name
    data = run.config["data"]
    for path in (data.get("train"), data.get("test")):
        if path and is_cache(path):
            SequenceCache(path)  # registers the cache's layout
            if name in layout_names():
                return name
    raise ValueError(
        f"{run.path}: its skeleton layout {name!r} was made at run time and its checkpoint does not keep it "
        f"(a run of an earlier version): register it first (skelang.data.register_layout)"
    )


def bodies_of(sequences) -> int:
    """The most bodies (M) of any of `sequences`: a cache's own M (one for all its items, read
    without loading any), else each sequence's, one at a time."""
    if isinstance(sequences, SequenceCache):
        return int(sequences.frames.shape[-1])  # (frames, C, V, M), memory-mapped
    return max(sequence.data.shape[3] for sequence in sequences)


def load_sequences(data: dict) -> tuple[list, list]:
    """(training sequences, test sequences) of the data section: the two parts of
    `benchmark`, or the `train` and `test` paths whole."""
    benchmark = data["benchmark"]
    test_path = data["test"] or data["train"]
    if benchmark is not None and test_path == data["train"]:  # one dataset, read once
        sequences = open_sequences(data["train"])
        parts = [split_of(benchmark, sequence.meta) for sequence in sequences]
        train = [s for s, part in zip(sequences, parts) if part == "train"]
        test = [s for s, part in zip(sequences, parts) if part == "test"]
    else:
        train = open_sequences(data["train"], benchmark, benchmark and "train")
        test = open_sequences(test_path, benchmark, benchmark and "test")
    for name, part in (("training", train), ("test", test)):
        if len(part) == 0:
            raise ValueError(
                f"no {name} sequences in {data['train'] if part is train else test_path}"
                + (f" (benchmark {benchmark})" if benchmark else "")
            )
    counts = collections.Counter(sequence.sample_id(i) for i, sequence in enumerate(test))
    repeated = sorted(sample for sample, count in counts.items() if count > 1)
    if repeated:  # found before training, not by the ensemble of finished runs
        raise ValueError(
            f"{test_path}: {len(repeated)} test sample name(s) occur more than once ({', '.join(repeated[:5])}"
            f"{', ...' if len(repeated) > 5 else ''}); scores.npz and ensembles match samples by name"
        )
    return train, test


def dataset_class_names(data: dict, sequences: list, count: int) -> list[str] | None:
    """The class names of a data section's dataset: those its files carry (clip files with
    named labels, a cache), else those of the built-in descriptions of its benchmark or of the
    synthetic set; None when neither has `count` names."""
    named = sequences[0].meta.get("class_names") if sequences else None
    if named is not None and len(named) == count:
        return list(named)
    benchmark, source = data["benchmark"] or "", str(data["train"])
    builtin = next((name for name in ("ntu60", "ntu120", "nw-ucla") if benchmark.startswith(name)), None)
    if builtin is None and source.startswith("synthetic"):
        builtin = "synthetic"
    if builtin is None:
        return None
    from skelang.fusion.descriptions import load_descriptions

    names = load_descriptions(builtin).names()
    return names if len(names) == count else None


def check_layout(sequences, layout: str, what: str) -> None:
    """Every one of `sequences` is a skeleton of `layout`, the one `what` (a run, a training
    set) has; else a ValueError naming the first that is not, and both layouts with their
    joint counts (a model's norms and topology are sized by the joints)."""
    from skelang.data.layouts import get_layout

    if isinstance(sequences, SequenceCache):  # one layout for all its items: none is read
        sequences = [sequences[0]] if sequences.layout != layout and len(sequences) else []
    for index, sequence in enumerate(sequences):
        if sequence.layout != layout:
            raise ValueError(
                f"{sequence.sample_id(index)} is a skeleton of layout {sequence.layout} "
                f"({get_layout(sequence.layout).num_joints} joints), but {what} has {layout} "
                f"({get_layout(layout).num_joints} joints): give data of that layout "
                f"(skelang.data.mapping.map_layout derives ntu25 and kinect_v1_20 from blazepose33)"
            )


def count_classes(data: dict, datasets: list[SkeletonDataset]) -> int:
    labels = np.concatenate([dataset.labels for dataset in datasets])
    if labels.min() < 0:
        unlabelled = list(
            dict.fromkeys(
                sequence.sample_id(i)
                for dataset in datasets
                for i, sequence in enumerate(dataset.sequences)
                if sequence.label is None or sequence.label < 0
            )
        )
        raise ValueError(
            f"the data holds {len(unlabelled)} unlabelled sequence(s) ({', '.join(map(str, unlabelled[:3]))}"
            f"{' ...' if len(unlabelled) > 3 else ''}): training needs a label on every one"
        )
    if data["num_classes"] is None:
        return int(labels.max()) + 1
    if labels.max() >= data["num_classes"]:
        raise ValueError(f"data.num_classes is {data['num_classes']} but the data has label {labels.max()}")
    return data["num_classes"]


@torch.no_grad()
def predict(model: torch.nn.Module, loader, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, classes) logits of `model` (in eval mode) and (N,) labels over `loader`."""
    model.eval()
    logits, labels = [], []
    for inputs, batch_labels in loader:
        logits.append(model(inputs.to(device)).float().cpu())
        labels.append(batch_labels)
    return torch.cat(logits), torch.cat(labels)


class EncoderStage(Stage):
    """Stage `encoder`: a skeleton encoder with a classification head, cross-entropy."""

    name = "encoder"

    # --- the model --------------------------------------------------------------------------

    def build_model(self, shape: dict, for_training: bool) -> torch.nn.Module:
        """The stage's model for inputs of `shape` (SHAPE_KEYS); `for_training` loads what it
        starts from (a frozen encoder run)."""
        return build_model(
            self.config["model"], shape["in_channels"], shape["num_classes"], shape["layout"], shape["num_bodies"]
        )

    def stage_metrics(self, loader, **options) -> dict:
        """Metrics of the stage beside top-1 (an SSF's text prototypes, VST's tokens)."""
        return {}

    def training_sequences(self, sequences: list) -> list:
        return sequences

    # --- training ----------------------------------------------------------------------------

    def build(self) -> None:
        config, data = self.config, self.config["data"]
        train_sequences, test_sequences = load_sequences(data)
        self.train_sequences = self.training_sequences(train_sequences)
        layout = self.train_sequences[0].layout
        check_layout(self.train_sequences, layout, f"the first sequence of data.train ({data['train']})")
        check_layout(test_sequences, layout, f"data.train ({data['train']})")
        self.preprocess = make_preprocess(data)
        # clips of one, two or more people (PYSKL keeps each clip's own): all as the most
        num_bodies = self.model_bodies(max(bodies_of(self.train_sequences), bodies_of(test_sequences)))
        self.train_set = SkeletonDataset(
            self.train_sequences,
            self.preprocess,
            train=True,
            seed=config["seed"],
            repeat=data["repeat"],
            num_bodies=num_bodies,
        )
        self.test_set = SkeletonDataset(test_sequences, self.preprocess, num_bodies=num_bodies)
        in_channels = self.test_set[0][0].shape[0]
        self.shape = {
            "num_classes": count_classes(data, [self.train_set, self.test_set]),
            "in_channels": in_channels,
            "layout": self.train_sequences[0].layout,
            "num_bodies": num_bodies,
        }
        self.model = self.build_model(self.shape, for_training=True).to(self.device)
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=config["optim"]["label_smoothing"])
        self.test_loader = make_loader(
            self.test_set, config["train"]["test_batch_size"], shuffle=False, num_workers=self.num_workers
        )
        self.train_loader = make_loader(
            self.train_set,
            config["train"]["batch_size"],
            shuffle=True,
            seed=config["seed"],
            num_workers=self.num_workers,
            rank=self.ranks.rank,
            world=self.ranks.world,
        )

    def parameter_groups(self) -> list[dict]:
        return [{"params": [p for p in self.model.parameters() if p.requires_grad], "lr_scale": 1.0}]

    def num_batches(self) -> int:
        return len(self.train_loader.batch_sampler)

    def set_epoch(self, epoch: int) -> None:
        self.train_set.set_epoch(epoch)
        self.model.train()

    def batches(self, epoch: int):
        self.train_loader.batch_sampler.set_epoch(epoch)
        return self.train_loader

    def training_step(self, batch) -> StepOutput:
        inputs, labels = batch[0].to(self.device), batch[1].to(self.device)
        parts = {}
        if hasattr(self.model, "losses"):  # SSF, VST: the model weighs its own losses
            loss, logits, parts = self.model.losses(inputs, labels, self.criterion)
            parts = {f"loss_{name}": value for name, value in parts.items()}
        else:
            logits = self.model(inputs)
            loss = self.criterion(logits, labels)
        return StepOutput(loss, len(labels), (logits.argmax(dim=1) == labels).sum().item(), parts)

    def evaluate(self, final: bool) -> dict:
        return self.evaluate_loader(self.test_loader, self.test_set.sequences, write_scores=final)

    def evaluate_loader(self, loader, sequences, write_scores: bool = False, **options) -> dict:
        """Classification metrics and the stage's own on `loader` (over `sequences`); with
        `write_scores` the per-sample logits go to the run's scores.npz."""
        logits, labels = predict(self.model, loader, self.device)
        metrics = classification_metrics(logits, labels)
        metrics.update(self.stage_metrics(loader, **options))
        if write_scores and self.ranks.is_main:
            ids = [sequence.sample_id(i) for i, sequence in enumerate(sequences)]
            metrics["scores"] = str(self.run.write_scores(ids, labels.numpy(), logits.numpy()))
        return metrics

    def class_names(self, count: int) -> list[str] | None:
        names = getattr(self, "names", None)
        if names is None and hasattr(self, "test_set"):
            names = self.names = dataset_class_names(self.config["data"], self.test_set.sequences, count)
        return names if names is not None and len(names) == count else None

    def state_dict(self) -> dict:
        # the class names travel with the weights: inference (skelang predict) reads no data
        return {
            "model": self.model.state_dict(),
            **self.shape,
            "layout_definition": layout_to_dict(self.shape["layout"]),  # a layout made at run time
            "class_names": self.class_names(self.shape["num_classes"]),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])

    def parameters_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    # --- a finished run ------------------------------------------------------------------------

    @classmethod
    def load(cls, run: RunDirectory, device: str | torch.device = "cpu") -> EncoderStage:
        """The stage of a run folder with its final weights (no data read)."""
        stage = cls(run.config, run, torch.device(device), progress=False)
        checkpoint = run.load_checkpoint()
        checkpoint_layout(run, checkpoint)
        stage.shape = {key: checkpoint[key] for key in SHAPE_KEYS}
        stage.model = stage.build_model(stage.shape, for_training=False)
        try:
            stage.model.load_state_dict(checkpoint["model"])
        except RuntimeError as error:
            raise ValueError(
                f"{run.file(CHECKPOINT)}: does not match the model of its config.yaml: {str(error).splitlines()[0]}"
            ) from None
        stage.load_finished_state(checkpoint)
        stage.model.to(stage.device).eval()
        stage.epoch = checkpoint["epoch"]
        stage.names = checkpoint.get("class_names")  # absent in runs from before they were kept
        if stage.config["train"]["precision"] == "fp16" and stage.device.type != "cuda":
            stage.config["train"]["precision"] = "fp32"  # a CUDA fp16 run evaluated on the CPU
        return stage

    def model_bodies(self, data_bodies: int) -> int:
        """The bodies (M) of the model's inputs for data of at most `data_bodies`."""
        return data_bodies

    def dataset(self, sequences) -> SkeletonDataset:
        """`sequences` with the run's evaluation preprocessing, with as many bodies as its model;
        a sequence of another skeleton layout than the model's is a ValueError naming it."""
        check_layout(sequences, self.shape["layout"], f"the model of {self.run.path}")
        return SkeletonDataset(sequences, make_preprocess(self.config["data"]), num_bodies=self.shape["num_bodies"])

    def evaluate_sequences(self, sequences, write_scores: bool = False, **options) -> dict:
        """Metrics of the loaded model on `sequences` (the run's evaluation preprocessing)."""
        dataset = self.dataset(sequences)
        loader = make_loader(
            dataset, self.config["train"]["test_batch_size"], shuffle=False, num_workers=self.num_workers
        )
        with self.autocast():  # the run's precision
            return {**self.evaluate_loader(loader, sequences, write_scores, **options), "epoch": self.epoch}
