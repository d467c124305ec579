"""The robot tabletop: a Panda arm in PyBullet, language tasks, scripted experts, suites.

- :class:`Tabletop` / :class:`TabletopConfig` - the gymnasium environment (``env.py``)
- :func:`get_suite`, :data:`SUITES`, :data:`FAMILIES`, :class:`EpisodeSpec` - tasks (``tasks.py``)
- :class:`ScriptedExpert`, :func:`run_expert_episode` - the IK expert (``expert.py``)
- colours, shapes, camera and rendering helpers live in ``scene.py``
"""

from playworld.envs.tabletop.env import ACTION_NAMES, STATE_NAMES, Tabletop, TabletopConfig
from playworld.envs.tabletop.expert import ScriptedExpert, run_expert_episode
from playworld.envs.tabletop.tasks import FAMILIES, SUITES, EpisodeSpec, Goal, Suite, get_suite

__all__ = [
    "ACTION_NAMES",
    "FAMILIES",
    "STATE_NAMES",
    "SUITES",
    "EpisodeSpec",
    "Goal",
    "ScriptedExpert",
    "Suite",
    "Tabletop",
    "TabletopConfig",
    "get_suite",
    "run_expert_episode",
]
