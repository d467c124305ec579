"""Gymnasium environments. ``import playworld.envs`` registers them with gymnasium::

import gymnasium as gym, playworld.envs
env = gym.make("playworld/Tabletop-v0", suite="symbols")
"""

from gymnasium.envs.registration import register

register(id="playworld/Tabletop-v0", entry_point="playworld.envs.tabletop:Tabletop")


def __getattr__(name: str):
    # Lazy, so importing playworld.envs (e.g. for another env) does not import PyBullet.
    if name == "Tabletop":
        from playworld.envs.tabletop import Tabletop

        return Tabletop
    raise AttributeError(f"module 'playworld.envs' has no attribute {name!r}")


# A generated world as an env; kwargs: world = a world folder or World (None: the bundled world).
register(id="playworld/World-v0", entry_point="playworld.envs.world_env:WorldEnv", kwargs={"world": None})

from playworld.envs.world_env import WorldEnv  # noqa: E402,F401  (light: gymnasium + numpy only)
