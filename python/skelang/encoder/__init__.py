"""Skeleton encoders: HGLNet (HocSLM) and the ST-GCN and CTR-GCN baselines, all one block
with switches (see skelang.encoder.hglnet)."""

from skelang.encoder.hglnet import PRESETS, EncoderConfig, SkeletonEncoder, build_model, encoder_config
from skelang.encoder.profile import profile, step_profile

__all__ = ["PRESETS", "EncoderConfig", "SkeletonEncoder", "build_model", "encoder_config", "profile", "step_profile"]
