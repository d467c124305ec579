"""Fixtures shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one torch thread, above all on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def sprites(tmp_path_factory) -> Path:
    """A small synthetic action-labelled video set (6 episodes of 30 frames, 32 px) for the latent
    policy tests; modules that need another size define their own ``sprites``."""
    from playworld.data.synthetic import make_sprites_dataset

    return make_sprites_dataset(tmp_path_factory.mktemp("data") / "sprites", episodes=6, length=30, size=32)


@pytest.fixture(scope="module")
def lam_dir(tmp_path_factory) -> Path:
    """An untrained, tiny latent action model (4 codes) saved as a folder, for the sprites."""
    from playworld.world.latent_actions import LatentActionConfig, LatentActionModel

    out = tmp_path_factory.mktemp("lam") / "lam"
    torch.manual_seed(0)
    LatentActionModel(LatentActionConfig(image_size=(32, 32), patch_size=8, dim=32, enc_depth=1, dec_depth=1, head_dim=16,
                                         num_actions=4, code_dim=8)).save_pretrained(out)
    return out
