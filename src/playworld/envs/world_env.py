"""A generated world as a gymnasium environment: observations are frames, actions latent actions.

``WorldEnv`` wraps any object with the World contract (``playworld.world.world.World``): the
observation is the generated uint8 (H, W, 3) frame, the action one of the world's ``|A|``
latent actions (Genie's CoinRun study trained agents on exactly these). There is no reward in
a world learned from video, so pass ``reward_fn(prev_frame, action, frame) -> float`` to define
one (default 0). ``reset(seed=...)`` makes the whole episode reproducible: the world's sampling
is seeded from the env's RNG on every reset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from playworld.errors import PlayworldError

RewardFn = Callable[[np.ndarray, int, np.ndarray], float]


class WorldEnv(gym.Env):
    """Play a World as a gymnasium env.

    Args:
        world: a World (the env plays a ``fork()`` of it, so many envs share one set of
            weights), a world folder, or ``None`` for the bundled world.
        prompt: what each episode starts from: an image path, PIL image or uint8 array; a list
            of them (one is drawn per reset with the env's RNG); or ``None`` for the world's
            sample prompts.
        reward_fn: ``reward_fn(prev_frame, action, frame) -> float``; default: reward 0.
        max_steps: episodes are truncated after this many steps (a dream never terminates).
        render_mode: only ``"rgb_array"`` (``render()`` returns the current frame).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}  # Genie's data: 10 FPS

    def __init__(
        self,
        world: Any = None,
        prompt: Any = None,
        reward_fn: RewardFn | None = None,
        max_steps: int = 1000,
        render_mode: str | None = "rgb_array",
    ):
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise PlayworldError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        if max_steps < 1:
            raise PlayworldError(f"max_steps must be >= 1, got {max_steps}")
        if world is None or isinstance(world, (str, Path)):
            from playworld.serve.commands import load_world

            world = load_world(world)
        self.world = world.fork()
        self.render_mode = render_mode
        self.reward_fn = reward_fn
        self.max_steps = max_steps
        self.num_actions = int(world.num_actions)
        self.action_labels = list(getattr(world, "action_labels", []))
        h, w = (int(s) for s in world.frame_size)
        self.observation_space = spaces.Box(0, 255, shape=(h, w, 3), dtype=np.uint8)
        self.action_space = spaces.Discrete(self.num_actions)
        if prompt is None:
            prompts: Sequence[Any] = world.sample_prompts()
            if not prompts:
                raise PlayworldError("this world ships no sample prompts; pass prompt=IMAGE to WorldEnv")
        elif isinstance(prompt, (list, tuple)):
            prompts = prompt
        else:
            prompts = [prompt]
        self.prompts = list(prompts)
        self._frame: np.ndarray | None = None
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        if "prompt" in options:
            prompt = options["prompt"]
        else:
            prompt = self.prompts[int(self.np_random.integers(len(self.prompts)))]
        # seeding the world from the env's RNG: reset(seed=s) fixes this and every later episode
        world_seed = int(self.np_random.integers(2**31 - 1))
        self._frame = self._obs(self.world.reset(prompt, seed=world_seed))
        self._steps = 0
        return self._frame, {"steps": 0, "world_seed": world_seed}

    def step(self, action):
        if self._frame is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        if not self.action_space.contains(action):
            raise PlayworldError(f"action {action!r} is not a latent action id in 0..{self.num_actions - 1}")
        action = int(action)
        prev = self._frame
        frame = self._obs(self.world.step(action))
        self._frame = frame
        self._steps += 1
        reward = float(self.reward_fn(prev, action, frame)) if self.reward_fn is not None else 0.0
        truncated = self._steps >= self.max_steps
        label = self.action_labels[action] if action < len(self.action_labels) else str(action)
        return frame, reward, False, truncated, {"steps": self._steps, "action_label": label}

    def render(self):
        if self.render_mode == "rgb_array":
            return None if self._frame is None else self._frame.copy()
        return None

    def _obs(self, frame) -> np.ndarray:
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if frame.shape != self.observation_space.shape:
            raise PlayworldError(
                f"the world returned a frame of shape {frame.shape}, expected {self.observation_space.shape}"
            )
        return frame
