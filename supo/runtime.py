"""Shared set-up of a run: tokenizer, templates, derived budgets (validated) and the loop settings for a given S, W."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from supo.config import Budgets, Config, derive_budgets, validate_budgets
from supo.models import load_tokenizer
from supo.rollout.agent_loop import LoopSettings
from supo.rollout.templates import Templates
from supo.types import Task


@dataclass
class Runtime:
    tokenizer: object
    templates: Templates
    budgets: Budgets
    settings: LoopSettings


def build_runtime(cfg: Config, model_dir: str | Path, tasks: Sequence[Task], *, max_summaries: int,
                  working_context: int, wc_field: str = "budget.working_context", tokenizer=None) -> Runtime:
    """Load the tokenizer, derive the budgets for (S, W), check them against the tasks' prompts, build settings."""
    tok = tokenizer if tokenizer is not None else load_tokenizer(model_dir)
    t = Templates.from_config(tok, cfg)
    longest = max(len(t.prompt_ids(tok, task)) for task in tasks)
    budgets = derive_budgets(cfg, working_context=working_context, summary_chunk_len=len(t.summary_request),
                             continuation_chunk_len=t.continuation_overhead, max_prompt_len=longest,
                             obs_overhead=t.obs_overhead)
    validate_budgets(cfg, budgets, working_context=working_context, wc_field=wc_field)
    b = cfg.budget
    settings = LoopSettings(trigger=budgets.trigger, max_summaries=max_summaries, max_steps=b.max_steps,
                            max_turn_tokens=b.max_turn_tokens, max_summary_tokens=b.max_summary_tokens,
                            max_obs_tokens=b.max_obs_tokens, engine_max_len=cfg.engine.max_model_len,
                            train_trigger_action=cfg.train.train_trigger_action)
    return Runtime(tok, t, budgets, settings)


def shared_engine(cfgs: Sequence[Config]):
    """The engine settings of one engine that serves every config of ``cfgs`` in turn: the first config's, with the
    largest sequence limit of all (the training actors and a multi-checkpoint evaluation share one engine)."""
    return dataclasses.replace(cfgs[0].engine, max_model_len=max(c.engine.max_model_len for c in cfgs))


def shared_actor_settings(cfgs: Sequence[Config]) -> tuple:
    """What actors shared by the runs of ``cfgs`` one after another need (``supo.train_loop.Actors``,
    ``supo.local_actors.LocalActors``): the same ``rollout`` and ``trainer`` sections (a ValueError naming the section
    otherwise), one engine for the largest sequence limit (:func:`shared_engine`) and every run's plugins imported
    (``train.plugins``). Returns ``(engine settings, plugin refs)``."""
    from supo.plugins import import_plugins

    cfg = cfgs[0]
    for c in cfgs[1:]:
        for section in ("rollout", "trainer"):
            if getattr(c, section) != getattr(cfg, section):
                raise ValueError(f"runs that share actors need the same {section} settings")
    return shared_engine(cfgs), import_plugins(dict.fromkeys(p for c in cfgs for p in c.train.plugins))
