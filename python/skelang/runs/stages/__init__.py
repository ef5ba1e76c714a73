"""The stages a run can train (the config's `stage`), each a skelang.runs.stages.base.Stage."""

from skelang.runs.stages.base import Stage, StepOutput
from skelang.runs.stages.encoder import EncoderStage
from skelang.runs.stages.lm import LanguageModelStage
from skelang.runs.stages.ssf import SSFStage
from skelang.runs.stages.vst import VSTStage

STAGES: dict[str, type[Stage]] = {stage.name: stage for stage in (EncoderStage, SSFStage, VSTStage, LanguageModelStage)}

__all__ = ["STAGES", "EncoderStage", "LanguageModelStage", "SSFStage", "Stage", "StepOutput", "VSTStage"]
