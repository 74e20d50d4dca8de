"""`supo.evaluate` with the real vLLM engine: evaluations are reproducible by seed whatever else is evaluated with
them (common random numbers), and a checkpoint compared with itself differs by exactly 0."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import yaml

from supo.config import load_config
from supo.data import write_tasks
from supo.envs.array import make_tasks

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    """A run folder with 8 test tasks (and the same tasks reversed as a second data folder), the tiny model as the
    checkpoint, and one engine serving it."""
    from supo.evaluate import open_engine

    root = tmp_path_factory.mktemp("evalrun")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["budget"].update({"working_context": 200, "max_summaries": 2, "max_steps": 16})
    params["engine"]["max_model_len"] = 512
    params["eval"].update({"num_tasks": 8, "max_summaries": 2, "sweep": [0, 2]})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    tasks = make_tasks("test", 8, 10, 14, ["max", "sum"], 99, seed=0)
    write_tasks(tasks, root / "data/test.parquet")
    write_tasks(tasks[::-1], root / "reversed/test.parquet")
    shutil.copytree(tiny_model_dir, root / "ckpt")
    cfg = load_config(str(root / "params.yaml"), overrides=[f"paths.data={root / 'data'}"])
    return root, cfg, open_engine([cfg], root / "ckpt")


def _rollouts(folder: Path) -> dict[str, dict]:
    keep = ("reward", "tool_calls", "tokens_generated", "num_summaries", "overlong_reason", "transcript")
    out = {}
    for line in (folder / "rollouts.jsonl").read_text().splitlines():
        r = json.loads(line)
        out[r["task_id"]] = {k: r[k] for k in keep}
    return out


def test_an_evaluation_does_not_depend_on_the_batch_or_its_order(run):
    """The same checkpoint and seed: every task's rollout is the same evaluated among 8 tasks, alone with one other,
    and with the 8 in reverse order (token for token: the transcripts match)."""
    from supo.evaluate import evaluate

    root, cfg, engine = run
    ckpt = root / "ckpt"
    evaluate(cfg, checkpoint=ckpt, out=root / "all", engine=engine)
    few = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, num_tasks=2))
    evaluate(few, checkpoint=ckpt, out=root / "two", engine=engine)
    rev = dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, data=str(root / "reversed")))
    evaluate(rev, checkpoint=ckpt, out=root / "reversed_out", engine=engine)
    everything = _rollouts(root / "all")
    assert len(everything) == 8 and any(r["tool_calls"] > 1 for r in everything.values())
    two = _rollouts(root / "two")
    assert len(two) == 2 and all(two[t] == everything[t] for t in two)
    assert _rollouts(root / "reversed_out") == everything
    other_seed = dataclasses.replace(cfg, seed=cfg.seed + 1)
    evaluate(other_seed, checkpoint=ckpt, out=root / "seed1", engine=engine)
    assert _rollouts(root / "seed1") != everything, "another seed draws other rollouts"


def test_a_checkpoint_against_itself_differs_by_exactly_zero(run):
    """Two evaluations of one checkpoint at one seed (in different batches) give identical outcomes: the paired
    difference is 0 on every task, with a point interval."""
    from supo.evaluate import evaluate
    from supo.report.stats import bootstrap_effect
    from supo.results import Outcomes

    root, cfg, engine = run
    evaluate(cfg, checkpoint=root / "ckpt", out=root / "self_a", sweep=[0, 2], engine=engine)
    evaluate(cfg, checkpoint=root / "ckpt", out=root / "self_b", engine=engine)
    a = Outcomes.read(root / "self_a" / "s2").success_by_task()
    b = Outcomes.read(root / "self_b").success_by_task()
    assert a == b
    tasks = sorted(a)
    effect = bootstrap_effect([[a[t] for t in tasks]], [[b[t] for t in tasks]])
    assert effect.effect == effect.low == effect.high == 0.0 and effect.degenerate
