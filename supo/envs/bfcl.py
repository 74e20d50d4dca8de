"""BFCL v4 multi-turn as an evaluation environment, from the ``bfcl-eval`` package's own data and backends.

``bfcl-eval`` (Apache-2.0) is installed with ``pip install --no-deps bfcl-eval==2026.3.23`` (scripts/setup.sh): its
pinned dependencies are heavy, and only its data files, its executable multi-turn backends and its checker are used
here, all of which import with the standard library (``MathAPI`` also needs ``mpmath``, a dependency of torch's
sympy). Nothing is fetched at run time.

An entry (``bfcl_eval/data/BFCL_v4_multi_turn_<category>.json`` + ``possible_answer/``) is a conversation of user
turns over stateful backends (``GorillaFileSystem``, ``TwitterAPI``, ``MessageAPI``, ``TicketAPI``, ``MathAPI``,
``TradingBot``, ``TravelAPI``, ``VehicleControlAPI``) started from the entry's ``initial_config``. :class:`BFCLEnv`:

* the task prompt is a system message (BFCL's default instructions adapted to supo's tool-call syntax, plus the
  function docs of the involved classes, minus the ones ``miss_func`` holds out) and the first user turn;
* an action with ``<tool_call>{"name", "parameters"}</tool_call>`` blocks (one, or several in order — BFCL's parallel
  calls) is executed on the live backend instance that owns each method (``getattr`` + keyword arguments, never
  ``eval``); the observation is the result rendered as BFCL does (a string as is, a dict as JSON, else ``str``;
  ``name: result`` paragraphs for several calls). An unknown function, arguments that do not bind to the signature,
  non-finite numbers, a malformed call, or an exception inside the backend → an ``Error:`` observation;
* an action without a tool call ends the current user turn (as in BFCL, where an empty decode ends the turn); the
  observation is the next user turn (for a ``miss_func`` hold-out turn: the added function docs and BFCL's "I have
  updated some more functions you can choose from. What about now?"). After the last turn the episode ends;
* more than BFCL's ``MAXIMUM_STEP_LIMIT`` (20) call messages in one turn force-terminates the episode (reward 0), as
  in BFCL;
* the reward is the package's own ``multi_turn_checker`` (state-based: every backend's public attributes equal the
  ground truth's after each turn; response-based: each turn's ground-truth execution results are contained in the
  model's results so far), run on the calls the model made, re-executed from scratch by the checker; 1.0 if valid.

The adapter's calls are rebuilt by the adapter as ``name(k=repr(v), ...)`` from validated JSON before the checker sees
them, so the checker's ``eval`` only ever runs strings of that form. Deviation from BFCL's own inference loop: a
malformed call is an ``Error:`` observation inside the turn (counted as a step) rather than the end of the turn.

Only entries whose backends import here are served; :func:`~supo.envs.bfcl_data.support_report` says what was skipped
and why. BFCL has no train split: ``build_split(cfg, "train")`` is empty and ``SPEC["eval_only"]`` is True.

The package's data and backends are in :mod:`supo.envs.bfcl_data`, the adapter's calls (parsing, rendering, the ground
truth) in :mod:`supo.envs.bfcl_calls`; this module holds the environment, the tasks, the scoring and the spec.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import uuid
from typing import Any

from supo.envs.base import ToolCall, ToolCallError
from supo.envs.bfcl_calls import IDENT, call_string, finite, parse_calls, render_result
from supo.envs.bfcl_data import (
    BLOCKED,
    CATEGORIES,
    MAXIMUM_STEP_LIMIT,
    backend_class,
    data_dir,
    entry_of,
    func_docs,
    stateless,
    supported_entries,
)
from supo.envs.files import FilesEnvConfig
from supo.envs.spec import EnvSpec
from supo.errors import require
from supo.models import TOOL_CALL_OPEN
from supo.types import Task

log = logging.getLogger(__name__)

ENV_NAME = "bfcl"
ADDED_FUNCTIONS_PROMPT = "I have updated some more functions you can choose from. What about now?"
SYSTEM_PROMPT = (
    "You are an expert in composing functions. You are given a question and a set of possible functions. Based on "
    "the question, you will need to make one or more function/tool calls to achieve the purpose. If none of the "
    "functions can be used, point it out. If the given question lacks the parameters required by the function, also "
    "point it out.\n\n"
    'Call one function per message, written as <tool_call>{{"name": NAME, "parameters": {{...}}}}</tool_call>, and '
    "wait for its result. At each turn, you should try your best to complete the tasks requested by the user within "
    "the current turn. Continue to output functions to call until you have fulfilled the user's request to the best "
    "of your ability. Once you have no more functions to call, reply without a tool call: the system will consider "
    "the current turn complete and proceed to the next turn or task.\n\n"
    "Here is a list of functions in JSON format that you can invoke:\n{functions}"
)


def _entry_functions(entry: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[int, list[dict[str, Any]]]]:
    """(function docs offered from the start, {turn: docs added at that turn}) — as bfcl's loader does for miss_func."""
    docs = [d for c in entry["involved_classes"] for d in func_docs(c)]
    held: dict[int, list[dict[str, Any]]] = {}
    for turn, names in entry.get("missed_function", {}).items():
        held[int(turn)] = [d for d in docs if d["name"] in names]
        docs = [d for d in docs if d["name"] not in names]
    return docs, held


def _render_docs(docs: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(d) for d in docs)


def _turn_text(entry: dict[str, Any], turn: int, held: dict[int, list[dict[str, Any]]]) -> str:
    if turn in held:
        return f"{_render_docs(held[turn])}\n{ADDED_FUNCTIONS_PROMPT}"
    return "\n".join(m["content"] for m in entry["question"][turn])


# ----------------------------------------------------------------------------------------------------------------------
# tasks


def _task(entry: dict[str, Any], category: str) -> Task:
    docs, held = _entry_functions(entry)
    prompt = [{"role": "system", "content": SYSTEM_PROMPT.format(functions=_render_docs(docs))},
              {"role": "user", "content": _turn_text(entry, 0, held)}]
    gt = entry["ground_truth"]
    return Task(id=entry["id"], env=ENV_NAME, env_config={"id": entry["id"], "category": category}, split="test",
                prompt=prompt, reference=json.dumps(gt), difficulty=sum(len(t) for t in gt))


def make_tasks(categories: list[str] | tuple[str, ...]) -> list[Task]:
    tasks = []
    for c in categories:
        ok, skipped = supported_entries(c)
        if skipped:
            log.warning("bfcl %s: %d of %d entries skipped (%s)", c, len(skipped), len(ok) + len(skipped),
                        skipped[0][1])
        tasks.extend(_task(e, c) for e in ok)
    return tasks


def requires(options: FilesEnvConfig) -> None:
    """Selected (``env.name: bfcl``): known categories."""
    cats = list(options.bfcl_categories)
    unknown = [c for c in cats if c not in CATEGORIES]
    require(bool(cats) and not unknown, "files.bfcl_categories",
            f"{unknown or 'empty'}; choose from {', '.join(CATEGORIES)}")


def files(options: FilesEnvConfig) -> list[tuple[str, str]]:
    """The categories' question files in the bfcl-eval package (none when it is not installed: then building the
    split names the package)."""
    try:
        root = data_dir()
    except ImportError:
        return []
    return [("files.bfcl_categories", str(folder / f"BFCL_v4_{c}.json")) for c in options.bfcl_categories
            for folder in (root, root / "possible_answer")]


def make_split(options: FilesEnvConfig, split: str, seed: int) -> list[Task]:
    """The test split: every served entry of ``files.bfcl_categories``; the train split is empty (eval only)."""
    if split == "train":
        return []
    if split != "test":
        raise ValueError(f"unknown split {split!r}; expected train or test")
    return make_tasks(list(options.bfcl_categories))


def build_split(cfg, split: str) -> list[Task]:
    """The ``split`` of a run config (its ``files`` section)."""
    return SPEC.build_split(cfg, split)




# ----------------------------------------------------------------------------------------------------------------------
# scoring with the package's checker


def score(entry: dict[str, Any], decoded: list[list[list[str]]], category: str | None = None) -> dict[str, Any]:
    """BFCL's ``multi_turn_checker`` on the model's decoded calls (per turn, per step, call strings)."""
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker

    gt = entry["ground_truth"]
    if len(decoded) != len(gt):
        return {"valid": False, "error_type": "multi_turn:force_terminated",
                "error_message": f"{len(decoded)} turns answered of {len(gt)}"}
    model_name = f"supo_{uuid.uuid4().hex}"
    test_entry = {"id": entry["id"], "initial_config": entry["initial_config"],
                  "involved_classes": entry["involved_classes"]}
    category = category or entry["id"].rsplit("_", 1)[0]
    try:
        res = multi_turn_checker(decoded, gt, test_entry, category, model_name)
    except Exception as e:  # the checker asserts on instance sets; any failure is an invalid result
        res = {"valid": False, "error_type": "multi_turn:checker_error",
               "error_message": f"{e.__class__.__name__}: {e}"}
    finally:
        g = vars(multi_turn_utils)
        for k in [k for k in g if k.startswith(model_name)]:
            del g[k]
    return {"valid": bool(res.get("valid")), "error_type": res.get("error_type"),
            "error_message": str(res.get("error_message", ""))[:500] or None}


# ----------------------------------------------------------------------------------------------------------------------
# the environment


class BFCLEnv:
    """One BFCL multi-turn conversation over live backend instances."""

    def __init__(self, entry: dict[str, Any], category: str) -> None:
        self.entry, self.category = entry, category
        self.long_context = "long_context" in category or "composite" in category
        _, self.held = _entry_functions(entry)
        self.reset()

    def reset(self) -> str:
        self.instances: dict[str, Any] = {}
        self.methods: dict[str, Any] = {}
        for c in self.entry["involved_classes"]:
            inst = backend_class(c)()
            if c not in stateless():
                inst._load_scenario(copy.deepcopy(self.entry["initial_config"].get(c, {})),
                                    long_context=self.long_context)
            self.instances[c] = inst
            for name, m in inspect.getmembers(inst, predicate=inspect.ismethod):
                if not name.startswith("_"):
                    self.methods[name] = m
        self.turn, self.turn_steps, self.steps = 0, 0, 0
        self.decoded: list[list[list[str]]] = [[]]
        self.responses: list[str] = []
        self.done, self.reward = False, 0.0
        self.result: dict[str, Any] | None = None
        return "ready"

    @property
    def num_turns(self) -> int:
        return len(self.entry["question"])

    def step(self, action_text: str) -> tuple[str, bool, float, dict[str, Any]]:
        """One model message: a tool call (executed) or a plain reply (ends the turn). Never raises."""
        if self.done:
            return "Error: the conversation is over", True, self.reward, {"error": "done"}
        self.steps += 1
        if TOOL_CALL_OPEN not in action_text:
            return self._end_turn(action_text)
        self.turn_steps += 1
        try:
            calls = parse_calls(action_text)
        except ToolCallError as e:
            calls, obs, info = [], f"Error: {e}", {"error": str(e)}
        if calls:
            step_calls: list[str] = []
            results = []
            for call in calls:
                try:
                    out = self._execute(call, step_calls)
                except ToolCallError as e:
                    out = f"Error: {e}"
                except Exception as e:  # never let a backend take the rollout down
                    out = f"Error: the call failed: {e.__class__.__name__}: {str(e)[:200]}"
                results.append(out)
            if step_calls:
                self.decoded[self.turn].append(step_calls)
            if len(calls) == 1:
                obs = results[0]
            else:
                obs = "\n\n".join(f"{c.name[:60]}: {r}" for c, r in zip(calls, results))
            info = {"tools": [c.name for c in calls], "errors": sum(r.startswith("Error") for r in results)}
        if self.turn_steps > MAXIMUM_STEP_LIMIT:
            self.done, self.reward = True, 0.0
            self.result = {"valid": False, "error_type": "multi_turn:force_terminated",
                           "error_message": f"more than {MAXIMUM_STEP_LIMIT} steps in turn {self.turn}"}
            obs += f"\nError: more than {MAXIMUM_STEP_LIMIT} call messages in one turn; the conversation ends"
            return obs, True, 0.0, {**info, **self._final_info()}
        return obs, False, 0.0, {**info, "turn": self.turn}

    def _execute(self, call: ToolCall, step_calls: list[str]) -> str:
        """Run one validated call on its backend; append its BFCL call string to ``step_calls``."""
        name, params = call.name, call.parameters
        if name in BLOCKED:
            raise ToolCallError(f"function {name} is not allowed")
        method = self.methods.get(name)
        if method is None or not IDENT.match(name):
            raise ToolCallError(f"unknown function {name[:60]!r}; the available functions are listed in the prompt")
        bad = [k for k in params if not IDENT.match(k)]
        if bad:
            raise ToolCallError(f"{name}: invalid parameter name(s) {bad[:3]}")
        if not finite(params):
            raise ToolCallError(f"{name}: numbers must be finite")
        try:
            inspect.signature(method).bind(**params)
        except TypeError as e:
            raise ToolCallError(f"{name}: bad arguments ({e})") from None
        step_calls.append(call_string(name, params))
        try:
            result = method(**params)
        except Exception as e:
            return f"Error: execution failed: {e.__class__.__name__}: {str(e)[:200]}"
        return render_result(result)

    def _end_turn(self, text: str) -> tuple[str, bool, float, dict[str, Any]]:
        self.responses.append(text)
        self.turn += 1
        self.turn_steps = 0
        if self.turn >= self.num_turns:
            self.result = score(self.entry, self.decoded, self.category)
            self.done = True
            self.reward = 1.0 if self.result["valid"] else 0.0
            return "The conversation is over.", True, self.reward, self._final_info()
        self.decoded.append([])
        return _turn_text(self.entry, self.turn, self.held), False, 0.0, {"turn": self.turn}

    def _final_info(self) -> dict[str, Any]:
        r = self.result or {}
        return {"valid": bool(r.get("valid")), "error_type": r.get("error_type"),
                "error_message": r.get("error_message"), "turns_completed": len(self.responses),
                "num_turns": self.num_turns, "calls": sum(len(t) for t in self.decoded)}


def make_env(task: Task) -> BFCLEnv:
    return BFCLEnv(entry_of(task), task.env_config["category"])


def make_expert(task: Task, error_rate: float, seed: int):
    raise NotImplementedError("env bfcl is an evaluation environment: it has no train split and no scripted expert "
                              "(supo.envs.bfcl_calls.ground_truth_actions replays the ground truth for checks)")


def corpus(tasks: list[Task]) -> list[str]:
    texts: list[str] = []
    for t in tasks:
        texts.extend(m["content"] for m in t.prompt)
    return texts


from supo.envs.base import check_env_field  # noqa: E402  (the env_config check, appended)


def validate_env_config(cfg: dict) -> None:
    """What :func:`make_env` reads: the entry ``id`` (a string) and its ``category`` (one of CATEGORIES). Raises
    ValueError naming the field."""
    check_env_field(cfg, "id", lambda v: isinstance(v, str) and v, "a BFCL entry id")
    check_env_field(cfg, "category", lambda v: v in CATEGORIES, f"one of {', '.join(CATEGORIES)}")


SPEC = EnvSpec(name="bfcl", section="files", options=FilesEnvConfig, make_split=make_split, make_env=make_env,
               make_expert=make_expert, corpus=corpus, validate_env_config=validate_env_config, requires=requires,
               files=files, eval_only=True)

__all__ = [
    "ADDED_FUNCTIONS_PROMPT", "ENV_NAME", "SPEC", "SYSTEM_PROMPT", "BFCLEnv", "build_split", "corpus", "make_env",
    "make_expert", "make_split", "make_tasks", "score", "validate_env_config",
]
