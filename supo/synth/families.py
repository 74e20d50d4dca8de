"""Task families: API graphs over small stateful simulated backends (files, travel, bank, inventory).

Each :class:`Family` holds

* its tools as :class:`~supo.synth.api_graph.Tool` specs (an :class:`~supo.synth.api_graph.APIGraph`);
* a :class:`Backend`: a JSON state plus one deterministic method per tool. A tool answers with one short line
  ``"<output name> <value>"`` (``"zip 42"``, ``"ticket TK12"``) or fails with :class:`ToolFailure`;
* the parameter sampler: :meth:`Family.sample_goal` draws the request arguments of a walk toward a target tool from
  the backend's current state, :meth:`Family.sample_follow` the arguments of an exploration call (FunReason-MT's
  ``P_s``); both are seeded by the caller's ``rng`` and may decline (``None``) when the state offers nothing sensible;
* the phrasebook the query writer and the scripted solver share: per tool, request templates (``goal``: mentions the
  literal arguments of the tool *and* of its prerequisites, so the prerequisite calls stay implicit) and follow-up
  templates (``follow``: mentions only the tool's own literal arguments), plus distractor sentences for noise.

Every tool is safe to repeat at once: calling the same tool with the same arguments twice in a row leaves the state and
the answer as one call does (``mkdir`` of an existing folder, ``cd`` into the folder you are in, paying a paid invoice,
re-buying the same ticket all return the first result). The rollout loop relies on it: when the summary trigger drops
the last (action, observation) pair, the environment keeps the side effect and the agent redoes the action.
Only the *persistent* part of the state (:meth:`Backend.verified`) decides the reward; cursors (the current
directory) and scratch records (transfer quotes) do not.

The shared parts are in :mod:`supo.synth.family_base`; each family in its own module (:mod:`supo.synth.family_files`,
:mod:`~supo.synth.family_travel`, :mod:`~supo.synth.family_bank`, :mod:`~supo.synth.family_inventory`); this module
is the registry.
"""

from __future__ import annotations

from supo.synth.family_bank import BankFamily
from supo.synth.family_base import Family
from supo.synth.family_files import FilesFamily
from supo.synth.family_inventory import InventoryFamily
from supo.synth.family_travel import TravelFamily

FAMILIES: dict[str, Family] = {f.name: f for f in (FilesFamily(), TravelFamily(), BankFamily(), InventoryFamily())}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown task family {name!r}; choose from {', '.join(FAMILIES)}") from None


__all__ = ["FAMILIES", "get_family"]
