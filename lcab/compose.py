"""Compose lcab's config outside a Hydra app (scripts, tests): the same lcab/conf/ and schemas."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from lcab.config import register_configs

CONF_DIR = Path(__file__).resolve().parent / "conf"  # ships inside the package


def compose_config(overrides: list[str]) -> DictConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)
