"""playworld.policy: policies beside the world model.

``VLAPolicy`` (RT-2-style vision-language-action policy, LeRobot-style ``reset`` /
``select_action``) is importable from here: ``from playworld.policy import VLAPolicy``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playworld.policy.vla_policy import VLAPolicy

__all__ = ["VLAPolicy"]


def __getattr__(name: str) -> Any:  # lazy: importing the package does not load torch models
    if name == "VLAPolicy":
        from playworld.policy.vla_policy import VLAPolicy

        return VLAPolicy
    raise AttributeError(f"module 'playworld.policy' has no attribute {name!r}")
