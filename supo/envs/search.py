"""The procedural search environment (BrowseComp-Plus-like): answer multi-hop questions over a seeded corpus.

The world (entities, documents, the BM25 index) is in :mod:`supo.envs.search_world`, the scripted expert in
:mod:`supo.envs.search_expert`; this module holds the environment, the tasks, the options and the spec.

**The world.** A seeded set of fictional entities of four types — people, companies, cities and products — with
attributes (a year, a profession or industry, ...) and functional relations:

* ``maker``: product → company; ``founder``: company → person; ``hq``: company → city;
* ``birthplace``: person → city; ``employer``: person → company; ``mayor``: city → person.

Every entity is rendered as one short document: a title ("Ada Quill (person)."), its attributes, its outgoing facts
("Quillworks was founded by Ada Quill.") and its back-links ("Ada Quill founded the company Quillworks."). Names are
unique among the real entities.

**Hard negatives.** Each entity also has ``distractors`` *namesake* documents: same name, same type, the same
attribute words (only the year differs), but every relation and back-link points elsewhere; the first namesake names
the entities linked to the true one in another role ("Torlo was founded by Hale Ixrek" where the true Torlo *employs*
him). A search for the name alone ranks the namesakes next to (often above) the true document, and their snippets look
alike, so an agent that takes the first hit follows a wrong fact. The true document is the one that meets the
question's constraint: the anchor's year (given in the question) or the back-link to the entity the agent came from.

**Questions.** A chain of ``hops`` relations from an anchor entity, asked as a nested phrase: "What is the birthplace
of the founder of the company that makes the product Zorblax (launched in 1994)?". The answer is the last entity's
exact name. Train and test questions use disjoint anchors; the test split has more hops (it needs more steps).

**Tools** (a :class:`~supo.envs.base.ToolEnv`): ``search(query)`` — BM25 (``bm25s``) over all documents, the top
``top_k`` as lines ``[doc_id] snippet`` (the first ``snippet_chars`` characters); ``open(doc_id)`` — the full
document; ``finish(answer)`` — ends the episode, reward 1 iff the answer equals the reference after whitespace and
case normalisation.

The corpus and its index depend only on ``(seed, num_entities, distractors)``; they are built once per process and
cached, so building an environment is cheap.

**The expert** (:class:`~supo.envs.search_expert.SearchExpert`) solves a hop by searching ``"<entity> <year>"`` (the
anchor) or ``"<entity> <back-link word> <previous entity>"``, opening the hits titled with the entity in rank order
until one meets the constraint (reading and skipping namesakes), and reading the next entity from it; it needs ``2 ×
hops + 1`` calls plus one per namesake it opens. Its summaries (``<summary>hop 2 of 3; found: maker = Torlo; open next:
d0412</summary>``) carry the facts found so far and the hits still to open. At ``error_rate`` a summary replaces the
last fact with the one a namesake of its source states; the expert then finds no document that meets the constraint,
takes the first hit titled with the wrong entity and answers wrong. The env's summary oracle
(:func:`~supo.envs.search_expert.summary_oracle`) checks a summary's facts against the question's chain.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from supo.envs.base import Tool, ToolCallError, ToolEnv
from supo.envs.search_expert import ExpertState, SearchExpert, expert_factory, summary_oracle, summary_text
from supo.envs.search_world import (
    OUT_RELATIONS,
    PHRASE,
    SYSTEM_PROMPT,
    USER_PROMPT,
    YEAR_VERB,
    World,
    get_world,
    normalize_answer,
)
from supo.envs.spec import EnvSpec
from supo.errors import require
from supo.fields import F
from supo.types import Task

# ----------------------------------------------------------------------------------------------------------------------
# the environment


def tool_docs(top_k: int, snippet_chars: int) -> list[Tool]:
    return [
        Tool("search", f"returns the top {top_k} documents for a keyword query, one line each: [doc_id] and the "
                       f"first {snippet_chars} characters", {"query": str}),
        Tool("open", "returns the full text of a document", {"doc_id": str}),
        Tool("finish", "submits the exact answer and ends the task", {"answer": str}, final=True),
    ]


class SearchEnv(ToolEnv):
    """One episode: answer one question by searching the world's documents."""

    def __init__(self, world: World, answer: str, top_k: int = 3, snippet_chars: int = 160) -> None:
        super().__init__()
        if top_k < 1:
            raise ValueError(f"search.top_k must be at least 1, got {top_k}")
        if snippet_chars < 0:
            raise ValueError(f"search.snippet_chars must be ≥ 0, got {snippet_chars}")
        self.world, self.answer = world, answer
        self.top_k, self.snippet_chars = top_k, snippet_chars
        fns = {"search": self._search, "open": self._open, "finish": self._finish}
        self.tools = {t.name: replace(t, fn=fns[t.name]) for t in tool_docs(top_k, snippet_chars)}

    def _search(self, query: str) -> str:
        if not self.world.query_tokens(query):
            raise ToolCallError("the query has no searchable words")
        hits = self.world.search(query, self.top_k)
        if not hits:
            return "no results"
        w = self.world
        return "\n".join(f"[{w.doc_ids[i]}] {w.texts[i][: self.snippet_chars]}" for i in hits)

    def _open(self, doc_id: str) -> str:
        i = self.world.doc_index.get(doc_id.strip())
        if i is None:
            raise ToolCallError(f"unknown doc_id {doc_id[:40]!r}; use an id from the search results")
        return f"[{self.world.doc_ids[i]}] {self.world.texts[i]}"

    def _finish(self, answer: str) -> str:
        self.reward = 1.0 if normalize_answer(answer) == normalize_answer(self.answer) else 0.0
        return "correct" if self.reward else "incorrect"


def _walk(world: World, anchor: str, relations: list[str]) -> list[str]:
    chain, cur = [anchor], anchor
    for r in relations:
        nxt = world.value(cur, r)
        if nxt is None:
            raise ValueError(f"entity {cur!r} has no relation {r!r}")
        chain.append(nxt)
        cur = nxt
    return chain


def make_env(task: Task) -> SearchEnv:
    cfg = task.env_config
    try:
        world = get_world(cfg["seed"], cfg["num_entities"], cfg["distractors"])
        chain = _walk(world, cfg["chain"][0], list(cfg["relations"]))
        if chain != list(cfg["chain"]):
            raise ValueError("the chain does not match the corpus (was it built with other search knobs?)")
        return SearchEnv(world, chain[-1], int(cfg["top_k"]), int(cfg["snippet_chars"]))
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ValueError(f"task {task.id}: bad env_config for the search env ({e})") from None


# ----------------------------------------------------------------------------------------------------------------------
# tasks


def anchor_phrase(type_: str, name: str, year: int) -> str:
    return f"the {type_} {name} ({YEAR_VERB[type_]} in {year})"


def question_phrase(anchor: str, relations: list[str]) -> str:
    x = anchor
    for r in relations:
        x = PHRASE[r].format(x=x)
    return x


def task_prompt(top_k: int, snippet_chars: int, phrase: str) -> list[dict[str, str]]:
    tools = "\n".join(f"- {t.signature()}: {t.doc}." for t in tool_docs(top_k, snippet_chars))
    return [
        {"role": "system", "content": SYSTEM_PROMPT.format(tools=tools)},
        {"role": "user", "content": USER_PROMPT.format(phrase=phrase)},
    ]


def _anchor_pool(world: World, split: str) -> list[int]:
    """Train and test questions start from disjoint anchors (one in five entities is a test anchor)."""
    order = list(range(len(world.entities)))
    random.Random(f"search-anchors-{world.seed}").shuffle(order)
    test = set(order[:: 5])
    return [i for i in order if (i in test) == (split == "test")]


def _sample_chain(world: World, rng: random.Random, anchors: list[int], hops: int) -> tuple[int, list[str]]:
    for _ in range(1000):
        anchor = rng.choice(anchors)
        visited, cur, rels = {anchor}, anchor, []
        for _ in range(hops):
            options = [r for r in OUT_RELATIONS[world.entities[cur].type]
                       if world.entities[cur].rel[r] not in visited]
            if not options:
                break
            r = rng.choice(options)
            rels.append(r)
            cur = world.entities[cur].rel[r]
            visited.add(cur)
        if len(rels) == hops:
            return anchor, rels
    raise ValueError(f"search: could not draw a {hops}-hop question with distinct entities; "
                     "raise search.num_entities")


def make_tasks(split: str, num: int, min_hops: int, max_hops: int, *, seed: int, num_entities: int = 400,
               distractors: int = 3, top_k: int = 3, snippet_chars: int = 160) -> list[Task]:
    """Synthesise ``num`` seeded questions with ``min_hops..max_hops`` hops (uniform).

    ``difficulty`` is the number of calls the clean expert makes: ``2 × hops + 1`` plus one per namesake it opens.
    """
    if not 1 <= min_hops <= max_hops:
        raise ValueError(f"search: hops must satisfy 1 ≤ min_hops ≤ max_hops, got {min_hops}..{max_hops}")
    world = get_world(seed, num_entities, distractors)
    anchors = _anchor_pool(world, split)
    rng = random.Random(f"search-{seed}-{split}")
    tasks = []
    for k in range(num):
        hops = rng.randint(min_hops, max_hops)
        a, rels = _sample_chain(world, rng, anchors, hops)
        e = world.entities[a]
        chain = _walk(world, e.name, rels)
        phrase = question_phrase(anchor_phrase(e.type, e.name, e.year), rels)
        task = Task(
            id=f"{split}-{k:05d}",
            env="search",
            env_config={"seed": seed, "num_entities": num_entities, "distractors": distractors, "top_k": top_k,
                        "snippet_chars": snippet_chars, "anchor_type": e.type, "anchor_year": e.year,
                        "relations": rels, "chain": chain},
            split=split,
            prompt=task_prompt(top_k, snippet_chars, phrase),
            reference=chain[-1],
        )
        _, pairs = run_expert(task)  # cheap (a few BM25 queries): the difficulty is the expert's exact call count
        task.difficulty = len(pairs)
        tasks.append(task)
    return tasks


@dataclass
class SearchEnvConfig:
    """The procedural search environment's options (params.yaml section ``search``; ``env.name: search``).

    The corpus depends on ``seed``, ``num_entities`` and ``distractors`` only. With these defaults and a 1K BPE, a
    search result is about 160 tokens (230 at most), an opened document about 80 (115 at most), so the budgets need
    ``budget.max_obs_tokens`` ≥ 232, ``budget.max_summary_tokens`` ≥ 48 and a working context of about 400–512
    tokens.
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

    def validate(self) -> None:
        """Hop ranges and tool knobs; ConfigError naming ``search.<field>``."""
        for name in ("train", "test"):
            a, b = getattr(self, f"{name}_min_hops"), getattr(self, f"{name}_max_hops")
            require(1 <= a <= b, f"search.{name}_min_hops/{name}_max_hops", f"need 1 ≤ min ≤ max, got {a}..{b}")
        require(self.top_k >= 1, "search.top_k", f"must be at least 1, got {self.top_k}")
        require(self.snippet_chars >= 0, "search.snippet_chars", f"must be ≥ 0, got {self.snippet_chars}")
        require(self.num_entities >= 1, "search.num_entities", f"must be ≥ 1, got {self.num_entities}")
        require(self.distractors >= 0, "search.distractors", f"must be ≥ 0, got {self.distractors}")
        require(self.num_train >= 1 and self.num_test >= 1, "search.num_train/num_test", "splits must not be empty")


def make_split(options: SearchEnvConfig, split: str, seed: int) -> list[Task]:
    """The ``split`` ("train" or "test") for ``options`` and ``seed``."""
    s = options
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; choose train or test")
    lo, hi, num = ((s.train_min_hops, s.train_max_hops, s.num_train) if split == "train"
                   else (s.test_min_hops, s.test_max_hops, s.num_test))
    return make_tasks(split, num, lo, hi, seed=seed, num_entities=s.num_entities, distractors=s.distractors,
                      top_k=s.top_k, snippet_chars=s.snippet_chars)


def build_split(cfg, split: str) -> list[Task]:
    """The ``split`` of a run config (its ``search`` section and ``seed``)."""
    return SPEC.build_split(cfg, split)


def run_expert(task: Task, env: SearchEnv | None = None, expert: SearchExpert | None = None,
               max_actions: int = 60) -> tuple[float | None, list[tuple[str, str]]]:
    """Drive the expert through ``env.step`` (no summaries); returns (reward or None, [(action, observation)])."""
    env = env if env is not None else make_env(task)
    if expert is None:
        env.reset()
        expert = SearchExpert(task)
    pairs = []
    for _ in range(max_actions):
        a = expert.act()
        obs, done, reward, _ = env.step(a)
        pairs.append((a, obs))
        expert.observe(a, obs)
        if done:
            return reward, pairs
    return None, pairs


CORPUS_CHARS = 120_000


def corpus(tasks: list[Task], max_chars: int = CORPUS_CHARS) -> list[str]:
    """The text pieces the tokenizer is trained on: prompts, expert actions, observations and summaries.

    Tasks are taken in a seeded order until about ``max_chars`` characters are collected. The budget is deliberately
    small: the documents' names and words are diverse, and with much more text a 1K-token BPE spends all its merges on
    them, leaving the fixed instructions that ``supo.prepare`` adds (the summary instruction, 50 copies) unmerged
    (about 200 tokens instead of about 13 for the paper's instruction).
    """
    texts: list[str] = []
    order = list(range(len(tasks)))
    random.Random(0).shuffle(order)
    for i in order:
        if sum(map(len, texts)) >= max_chars:
            break
        t = tasks[i]
        texts.extend(m["content"] for m in t.prompt)
        env, expert = make_env(t), SearchExpert(t)
        env.reset()
        seen: list[ExpertState] = [expert.state]
        for _ in range(60):
            a = expert.act()
            obs, done, _, _ = env.step(a)
            texts.extend([a, obs])
            expert.observe(a, obs)
            seen.append(expert.state)
            if done:
                break
        texts.extend(summary_text(expert.relations, ExpertState(facts=s.facts, cands=s.cands)) for s in seen[::2])
        texts.append(summary_text(expert.relations, ExpertState(facts=seen[-1].facts[:1], attempt=1)))
    return texts + ["incorrect", "no results"]


from supo.envs.base import check_env_field, is_int, is_str_list  # noqa: E402  (the env_config check, appended)


def validate_env_config(cfg: dict) -> None:
    """What :func:`make_env` and the expert read: the world's ``seed``, ``num_entities``, ``distractors``, the tool
    knobs ``top_k`` and ``snippet_chars``, the anchor's ``anchor_type`` and ``anchor_year``, ``relations`` (strings)
    and ``chain`` (one entity name more than relations). Types only: the chain is checked against the corpus when
    the env is built. Raises ValueError naming the field."""
    for name, low in (("seed", 0), ("num_entities", 1), ("distractors", 0), ("top_k", 1), ("snippet_chars", 0)):
        check_env_field(cfg, name, lambda v, low=low: is_int(v) and v >= low, f"an integer ≥ {low}")
    check_env_field(cfg, "anchor_year", is_int, "an integer")
    check_env_field(cfg, "anchor_type", lambda v: v in YEAR_VERB, f"one of {', '.join(YEAR_VERB)}")
    check_env_field(cfg, "relations", is_str_list, "a list of relation names")
    check_env_field(cfg, "chain", lambda v: is_str_list(v, 1) and len(v) == len(cfg["relations"]) + 1,
                    "a list of entity names, one more than relations")


SPEC = EnvSpec(name="search", options=SearchEnvConfig, make_split=make_split, make_env=make_env,
               make_expert=expert_factory, corpus=corpus, validate_env_config=validate_env_config,
               make_tasks=make_tasks, summary_oracle=summary_oracle)

__all__ = [
    "CORPUS_CHARS", "SPEC", "SearchEnv", "SearchEnvConfig", "anchor_phrase", "build_split", "corpus", "make_env",
    "make_split", "make_tasks", "question_phrase", "run_expert", "task_prompt", "tool_docs", "validate_env_config",
]
