"""playworld: turn raw video into playable worlds (Genie) and agents that act in them (RT-2).

Layout follows the data flow: ``data`` -> ``world`` (tokenizer -> latent actions -> dynamics
-> World) -> ``serve`` (play), with ``policy`` and ``envs`` beside it. Shared neural building
blocks live in ``nn``; the one training loop lives in ``train``; metrics in ``eval``.
"""

__version__ = "0.1.0"

from playworld.errors import PlayworldError  # noqa: F401
