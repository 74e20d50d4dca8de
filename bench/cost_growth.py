"""Cost growth of one rollout with the number of steps: GRPO (history grows without bound) against SUPO (working
context W, summaries when the trigger fires).

The array env's scripted expert (``supo.envs.array.ArrayExpert``, no summary errors) is rolled through
``supo.rollout.agent_loop.run_rollouts`` on long arrays (``2n + 1`` actions each) twice: GRPO, S = 0 with a working
context so large that the trigger never fires, and SUPO, the profile's W (params.yaml ``budget.working_context``) with
S large enough never to run out. A recording wrapper around the expert policy keeps every turn: its loop iteration,
context ids, kind (action or summary) and output length. Per step count N (actions taken; a SUPO summary is charged to
the action that follows it, and SUPO repeats the action the trigger dropped, so it takes one action more per summary)
the benchmark reports, averaged over rollouts:

* **tokens processed** — cumulative prefill + decode as the loop counts them (``Rollout.tokens_processed``: each turn's
  full context plus its output, no caching), quadratic in N for GRPO, linear for SUPO;
* **wall time** — every recorded turn replayed through the real vLLM engine (``VLLMPolicy``'s engine, a randomly
  initialised model of the tiny profile's size by default): one batched ``generate`` per recorded loop iteration,
  forced to emit exactly the expert's number of tokens (``min_tokens = max_tokens``, ``ignore_eos``); a rollout is
  charged the batch time divided by the batch size, and of ``--repeats`` replays the fastest time of each batch
  counts (the first replay of a shape pays one-off set-up costs; other processes on the cores add spikes; the
  engine runs with ``--threads`` torch threads, default 1, which keeps those spikes small).
  Two modes: **cached** — the engine as the trainer runs it, with prefix caching on, so a turn re-uses the KV blocks
  of the previous turn's context and prefills only what was appended (for SUPO, a new segment's prompt — initial
  prompt + continuation + summary — is prefilled anew after each summary);
  **no reuse** — the prefix cache is reset before every iteration, so every turn prefills its whole context (what the
  tokens-processed accounting assumes; blocks shared by the rollouts of one batch, such as the common system prompt,
  are still computed once).

Printed: a side-by-side table at selected N with GRPO/SUPO ratios, the step count from which GRPO's cumulative cost
exceeds SUPO's for good (the crossing, searched from SUPO's first summary on — before it both arms are the same
rollouts; SUPO pays for summary turns, re-prefilled segment prompts and repeated actions), and the ratios at the first
step where GRPO's context holds 4 × W tokens. A PNG plot goes to ``--out`` (default: a
new temporary folder; the path is printed). Usage:

    python bench/cost_growth.py [--array-len 40] [--rollouts 8] [--model-size tiny|25m] [--max-summaries 1000]
        [--repeats 2] [--threads 1] [--rows 12] [--config params.yaml] [--out PATH.png] [--workdir DIR]
        [-S key=value ...] [--quick]

``--quick`` is a smoke run (arrays of 20, 2 rollouts, one replay).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MEDIUM_MODEL, build_profile_tokenizer, build_random_model, engine_config, load_note, \
    add_run_args, load_profile, set_threads  # noqa: E402

from supo.contracts import GenRequest, GenResult, Policy  # noqa: E402
from supo.rollout.agent_loop import run_rollouts  # noqa: E402
from supo.types import Rollout  # noqa: E402

MODES = ("cached", "no reuse")
UNBOUNDED = 10**7  # a working context / engine limit no rollout of this benchmark reaches


@dataclass
class Turn:
    """One recorded generation of one rollout."""

    iteration: int  # the loop iteration (one batched generate call)
    key: int  # the rollout
    kind: str  # "action" or "summary"
    context: list[int]
    output_len: int
    step: int  # the action this turn belongs to (a summary belongs to the action after it), 1-based

    @property
    def tokens(self) -> int:
        return len(self.context) + self.output_len


class RecordingPolicy:
    """Wraps a policy and records every request it answers as a :class:`Turn`."""

    def __init__(self, inner: Policy) -> None:
        self.inner = inner
        self.turns: list[Turn] = []
        self._iteration = 0
        self._actions: dict[int, int] = defaultdict(int)

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        results = self.inner.generate(requests)
        for req, res in zip(requests, results):
            if req.kind == "action":
                self._actions[req.key] += 1
            step = self._actions[req.key] + (req.kind != "action")
            self.turns.append(Turn(self._iteration, req.key, req.kind, list(req.context), len(res.token_ids), step))
        self._iteration += 1
        return results

    def on_step(self, key: int, action: str, observation: str) -> None:
        self.inner.on_step(key, action, observation)

    def on_drop(self, key: int) -> None:
        self.inner.on_drop(key)


@dataclass
class ArmRun:
    """One arm's recorded rollouts, turns and replay times (seconds per turn, by mode)."""

    rollouts: list[Rollout]
    turns: list[Turn]
    seconds: dict[str, list[float]] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------------------
# recording the expert's rollouts


def record_arm(cfg: Any, tokenizer: Any, tasks: list[Any], *, max_summaries: int, working_context: int,
               max_steps: int) -> ArmRun:
    """Roll the error-free expert over ``tasks`` under (S, W) and record every turn."""
    from supo.envs.array import expert_factory, make_env
    from supo.models import IM_END
    from supo.rollout.expert_policy import ExpertPolicy
    from supo.runtime import build_runtime

    rt = build_runtime(cfg, "", tasks, max_summaries=max_summaries, working_context=working_context,
                       tokenizer=tokenizer)
    rt.settings.max_steps = max_steps
    experts = {k: expert_factory(t, 0.0, cfg.seed + k) for k, t in enumerate(tasks)}
    policy = RecordingPolicy(ExpertPolicy(tokenizer, experts, tokenizer.convert_tokens_to_ids(IM_END)))
    items = [(t, f"{t.id}@cost", 0) for t in tasks]
    rollouts = run_rollouts(items, policy, rt.tokenizer, rt.templates, rt.settings, make_env, seed=cfg.seed)
    return ArmRun(rollouts, policy.turns)


def record_arms(cfg: Any, tokenizer: Any, args: argparse.Namespace) -> dict[str, ArmRun]:
    from supo.envs.array import SPEC, make_tasks

    e = SPEC.options_of(cfg)  # the array env's options (params.yaml keeps them in `env`)
    tasks = make_tasks("bench", args.rollouts, args.array_len, args.array_len, e.families, e.value_max, cfg.seed)
    max_steps = 10 * (2 * args.array_len + 1)
    grpo_cfg = _with_engine_limit(cfg, UNBOUNDED + 1000)
    return {
        "GRPO": record_arm(grpo_cfg, tokenizer, tasks, max_summaries=0, working_context=UNBOUNDED,
                           max_steps=max_steps),
        "SUPO": record_arm(cfg, tokenizer, tasks, max_summaries=args.max_summaries,
                           working_context=cfg.budget.working_context, max_steps=max_steps),
    }


def _with_engine_limit(cfg: Any, max_model_len: int) -> Any:
    return dataclasses.replace(cfg, engine=engine_config(cfg, max_model_len))


# ----------------------------------------------------------------------------------------------------------------------
# replaying the turns through vLLM


def replay(llm: Any, turns: list[Turn], *, reuse: bool) -> list[float]:
    """Seconds charged to each turn: one batched generate per recorded iteration, divided over the batch."""
    from vllm import SamplingParams, TokensPrompt

    by_iteration: dict[int, list[int]] = defaultdict(list)
    for i, t in enumerate(turns):
        by_iteration[t.iteration].append(i)
    seconds = [0.0] * len(turns)
    llm.reset_prefix_cache()
    for it in sorted(by_iteration):
        batch = [turns[i] for i in by_iteration[it]]
        if not reuse:
            llm.reset_prefix_cache()
        prompts = [TokensPrompt(prompt_token_ids=t.context) for t in batch]
        params = [SamplingParams(max_tokens=t.output_len, min_tokens=t.output_len, ignore_eos=True, temperature=1.0,
                                 logprobs=0, detokenize=False) for t in batch]
        t0 = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        share = (time.perf_counter() - t0) / len(batch)
        for i in by_iteration[it]:
            seconds[i] = share
    return seconds


def replay_arms(arms: dict[str, ArmRun], model_dir: Path, cfg: Any, max_model_len: int, repeats: int) -> float:
    """Fill each arm's replay times for both modes (per turn, the minimum over ``repeats`` replays: the first replay
    of a batch shape pays one-off kernel set-up costs); return the engine's start-up seconds."""
    from supo.engines.vllm_engine import VLLMPolicy

    engine = VLLMPolicy(model_dir, engine_config(cfg, max_model_len), seed=cfg.seed)
    replay(engine.llm, arms["SUPO"].turns[:1], reuse=False)  # warm-up, untimed
    for _ in range(repeats):
        for mode in MODES:
            for arm in arms.values():
                seconds = replay(engine.llm, arm.turns, reuse=mode == "cached")
                best = arm.seconds.get(mode, seconds)
                arm.seconds[mode] = [min(a, b) for a, b in zip(best, seconds)]
    return engine.start_seconds


# ----------------------------------------------------------------------------------------------------------------------
# curves


@dataclass
class Curves:
    """Per-step means over rollouts (index N - 1 for step N)."""

    context: list[float]  # the context length the N-th action was sampled from
    summaries: list[float]  # summaries made before the N-th action
    tokens: list[float]  # cumulative tokens processed through step N
    seconds: dict[str, list[float]]  # cumulative replay seconds through step N, by mode


def curves(arm: ArmRun, steps: int) -> Curves:
    """Per-step means over the arm's rollouts, for steps 1..``steps``."""
    keys = sorted({t.key for t in arm.turns})
    per_key: dict[int, list[int]] = defaultdict(list)
    for i, t in enumerate(arm.turns):
        per_key[t.key].append(i)

    def mean_curve(value) -> list[float]:
        rows = []
        for k in keys:
            row = [0.0] * steps
            for i in per_key[k]:
                if arm.turns[i].step <= steps:
                    row[arm.turns[i].step - 1] += value(i)
            rows.append(row)
        return [statistics.fmean(col) for col in zip(*rows)]

    def cumulative(values: list[float]) -> list[float]:
        out, total = [], 0.0
        for v in values:
            total += v
            out.append(total)
        return out

    actions = lambda i: arm.turns[i].kind == "action"  # noqa: E731
    return Curves(
        context=mean_curve(lambda i: len(arm.turns[i].context) if actions(i) else 0.0),
        summaries=cumulative(mean_curve(lambda i: 0.0 if actions(i) else 1.0)),
        tokens=cumulative(mean_curve(lambda i: arm.turns[i].tokens)),
        seconds={m: cumulative(mean_curve(lambda i, m=m: arm.seconds[m][i])) for m in arm.seconds},
    )


def first_summary(s: Curves) -> int | None:
    """The first step at which some SUPO rollout has summarised: before it both arms ran identical contexts."""
    return next((i + 1 for i, v in enumerate(s.summaries) if v > 0), None)


def crossing(grpo: list[float], supo: list[float], start: int | None) -> int | None:
    """The first step N ≥ ``start`` from which GRPO's cumulative cost exceeds SUPO's at every later step (None:
    never, or no summary at all). Before ``start`` the arms are the same rollouts, so a difference there is noise."""
    if start is None:
        return None
    n = None
    for i in range(len(grpo) - 1, start - 2, -1):
        if grpo[i] <= supo[i]:
            break
        n = i + 1
    return n


def costs(g: Curves, s: Curves) -> list[tuple[str, list[float], list[float]]]:
    """(label, GRPO curve, SUPO curve) of every cost measured: tokens processed, then wall time per mode."""
    return [("tokens processed", g.tokens, s.tokens)] + [
        (f"wall time ({m})", g.seconds[m], s.seconds[m]) for m in MODES]


def first_step_with_context(c: Curves, tokens: float) -> int | None:
    return next((i + 1 for i, v in enumerate(c.context) if v >= tokens), None)


def common_steps(arms: dict[str, ArmRun]) -> int:
    """Steps every rollout of both arms reached."""
    per_key = defaultdict(int)
    for name, arm in arms.items():
        for t in arm.turns:
            per_key[(name, t.key)] = max(per_key[(name, t.key)], t.step)
    return min(per_key.values())


# ----------------------------------------------------------------------------------------------------------------------
# output


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"


def marks(g: Curves, s: Curves, W: int) -> dict[int, str]:
    """Notes for the rows of special steps: first summary, the crossings, 4 × W of GRPO history."""
    notes: dict[int, list[str]] = defaultdict(list)
    first = first_summary(s)
    if first:
        notes[first].append("first summary")
    for label, gv, sv in costs(g, s):
        n = crossing(gv, sv, first)
        if n:
            notes[n].append(f"crossing ({label.removeprefix('wall time (').removesuffix(')')})")
    n4 = first_step_with_context(g, 4 * W)
    if n4:
        notes[n4].append("GRPO ctx ≥ 4×W")
    return {n: "; ".join(v) for n, v in notes.items()}


def print_table(g: Curves, s: Curves, W: int, rows: int) -> None:
    from rich.console import Console
    from rich.table import Table

    steps = len(g.tokens)
    notes = marks(g, s, W)
    every = max(1, steps // rows)
    shown = sorted(set(range(every, steps + 1, every)) | set(notes) | {1, steps})
    table = Table(title="cumulative cost of one rollout through step N (mean over rollouts); ratio = GRPO / SUPO")
    cols = ["N", "GRPO ctx", "SUPO ctx", "SUPO sums", "tok GRPO", "tok SUPO", "tok GRPO/SUPO"]
    for m in MODES:
        cols += [f"{m} ms GRPO", f"{m} ms SUPO", f"{m} GRPO/SUPO"]
    for c in cols + ["note"]:
        table.add_column(c, justify="left" if c == "note" else "right", no_wrap=True)
    for n in shown:
        i = n - 1
        cells = [str(n), f"{g.context[i]:.0f}", f"{s.context[i]:.0f}", f"{s.summaries[i]:.1f}", f"{g.tokens[i]:.0f}",
                 f"{s.tokens[i]:.0f}", _ratio(g.tokens[i], s.tokens[i])]
        for m in MODES:
            cells += [f"{1e3 * g.seconds[m][i]:.1f}", f"{1e3 * s.seconds[m][i]:.1f}",
                      _ratio(g.seconds[m][i], s.seconds[m][i])]
        table.add_row(*cells, notes.get(n, ""))
    Console(width=1000).print(table)  # one line per row whatever the notes' length (a wrapped row reads as two)


def print_summary(arms: dict[str, ArmRun], g: Curves, s: Curves, W: int) -> None:
    for label, gv, sv in costs(g, s):
        n = crossing(gv, sv, first_summary(s))
        print(f"crossing, {label}: " + (f"GRPO's cumulative cost exceeds SUPO's from step {n} on" if n
                                        else "GRPO never exceeds SUPO for good within the common steps"))
    n4 = first_step_with_context(g, 4 * W)
    if n4:
        i = n4 - 1
        parts = [f"tokens {_ratio(g.tokens[i], s.tokens[i])}"] + [
            f"wall {m} {_ratio(g.seconds[m][i], s.seconds[m][i])}" for m in MODES]
        print(f"at 4×W = {4 * W} tokens of GRPO history (step {n4}): GRPO/SUPO " + ", ".join(parts))
    else:
        print(f"GRPO's history never reached 4×W = {4 * W} tokens: use a longer --array-len")
    for name, arm in arms.items():
        r = arm.rollouts
        totals = [sum(t.tokens for t in arm.turns if t.key == k) for k in range(len(r))]
        mean = statistics.fmean
        print(f"{name}: {mean(x.tool_calls for x in r):.1f} actions, {mean(x.num_summaries for x in r):.1f} summaries, "
              f"success {mean(x.reward for x in r):.2f}; whole rollout: {mean(totals):.0f} tokens processed (check: "
              f"Rollout.tokens_processed {mean(x.tokens_processed for x in r):.0f}), vLLM "
              + ", ".join(f"{m} {1e3 * sum(arm.seconds[m]) / len(r):.1f} ms" for m in MODES))


def plot(g: Curves, s: Curves, W: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = list(range(1, len(g.tokens) + 1))
    panels = costs(g, s)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    n4 = first_step_with_context(g, 4 * W)
    for ax, (label, gv, sv) in zip(axes, panels):
        scale, title = (1.0, f"{label}, cumulative") if label == "tokens processed" else (
            1e3, f"vLLM {label}, ms, cumulative")
        ax.plot(steps, [scale * v for v in gv], label="GRPO (S = 0)")
        ax.plot(steps, [scale * v for v in sv], label=f"SUPO (W = {W})")
        n = crossing(gv, sv, first_summary(s))
        if n:
            ax.axvline(n, color="grey", linestyle="--", label=f"crossing (step {n})")
        if n4:
            ax.axvline(n4, color="grey", linestyle=":", label=f"GRPO history 4×W (step {n4})")
        ax.set_title(title)
        ax.set_xlabel("step N (actions taken)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="params.yaml")
    ap.add_argument("--array-len", type=int, default=40, help="n: every rollout's array length (2n + 1 actions)")
    ap.add_argument("--rollouts", type=int, default=8, help="rollouts per arm (tasks alternate between families)")
    ap.add_argument("--model-size", choices=("tiny", "25m"), default="tiny", help="the replayed random model")
    ap.add_argument("--max-summaries", type=int, default=1000, help="SUPO's S (large: never runs out)")
    ap.add_argument("--repeats", type=int, default=2, help="replays per arm and mode; the fastest time per turn counts")
    ap.add_argument("--rows", type=int, default=12, help="about this many evenly spaced table rows")
    ap.add_argument("--out", default="", help="PNG path (default: cost_growth.png in a new temporary folder)")
    add_run_args(ap, workdir_help="scratch folder for the built model (default: a temporary one)",
                 quick_help="smoke run: arrays of 20, 2 rollouts, one replay")
    args = ap.parse_args(argv)
    if args.quick:
        args.array_len, args.rollouts, args.repeats = 20, 2, 1
    return args


def run(args: argparse.Namespace, workdir: Path) -> None:
    cfg = load_profile(args.config, "array", args.set)
    W = cfg.budget.working_context
    tok = build_profile_tokenizer(cfg, workdir / "tokenizer")
    arms = record_arms(cfg, tok, args)
    longest = max(t.tokens for arm in arms.values() for t in arm.turns)
    max_len = 256 * math.ceil((longest + 1) / 256)
    sizes = MEDIUM_MODEL if args.model_size == "25m" else {}
    params = build_random_model(tok, cfg, workdir / "model", max_len=max_len, **sizes)
    print(f"replaying {sum(len(a.turns) for a in arms.values())} turns ({args.rollouts} rollouts per arm, arrays of "
          f"{args.array_len}, longest context {longest} tokens) through vLLM with a random {args.model_size} Qwen2 "
          f"({params:,} parameters), max_model_len {max_len} ...", flush=True)
    start = replay_arms(arms, workdir / "model", cfg, max_len, args.repeats)
    steps = common_steps(arms)
    g, s = curves(arms["GRPO"], steps), curves(arms["SUPO"], steps)
    print_table(g, s, W, args.rows)
    print_summary(arms, g, s, W)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="supo-cost-growth-")) / "cost_growth.png"
    plot(g, s, W, out)
    print(f"engine start-up {start:.1f} s (untimed); prefix caching on in the engine; W = {W}; plot: {out}")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    t0 = time.perf_counter()
    threads = set_threads(args.threads)
    print(f"at start: {load_note()}; torch threads {threads}", flush=True)
    if args.workdir:
        run(args, Path(args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="supo-bench-") as tmp:
            run(args, Path(tmp))
    print(f"at end: {load_note()}")
    print(f"benchmark wall time: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
