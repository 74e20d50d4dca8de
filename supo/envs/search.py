"""The procedural search environment (BrowseComp-Plus-like): answer multi-hop questions over a seeded corpus.

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

**The expert** (:class:`SearchExpert`) solves a hop by searching ``"<entity> <year>"`` (the anchor) or ``"<entity>
<back-link word> <previous entity>"``, opening the hits titled with the entity in rank order until one meets the
constraint (reading and skipping namesakes), and reading the next entity from it; it needs ``2 × hops + 1`` calls plus
one per namesake it opens. Its summaries (``<summary>hop 2 of 3; found: maker = Torlo; open next: d0412</summary>``)
carry the facts found so far and the hits still to open. At ``error_rate`` a summary replaces the last fact with the one
a namesake of its source states; the expert then finds no document that meets the constraint, takes the first hit
titled with the wrong entity and answers wrong.
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field, replace

import numpy as np

from supo.envs.base import Tool, ToolCallError, ToolEnv, format_tool_call, parse_tool_call
from supo.envs.spec import EnvSpec
from supo.errors import require
from supo.fields import F
from supo.models import SUMMARY_CLOSE, SUMMARY_OPEN
from supo.types import Task

# ----------------------------------------------------------------------------------------------------------------------
# the world: entity types, relations and how they are written

TYPES = ("person", "company", "city", "product")
TYPE_SHARE = {"person": 0.30, "company": 0.25, "city": 0.20, "product": 0.25}
YEARS = {"person": (1900, 1999), "company": (1850, 2010), "city": (1100, 1800), "product": (1950, 2020)}
YEAR_VERB = {"person": "born", "company": "established", "city": "chartered", "product": "launched"}

# relation: (source type, target type)
RELATIONS: dict[str, tuple[str, str]] = {
    "maker": ("product", "company"),
    "founder": ("company", "person"),
    "hq": ("company", "city"),
    "birthplace": ("person", "city"),
    "employer": ("person", "company"),
    "mayor": ("city", "person"),
}
OUT_RELATIONS = {t: [r for r, (s, _) in RELATIONS.items() if s == t] for t in TYPES}
IN_RELATIONS = {t: [r for r, (_, d) in RELATIONS.items() if d == t] for t in TYPES}

# the fact as the source's document states it ({s} source name, {t} target name)
FACT = {
    "maker": "{s} is made by the company {t}.",
    "founder": "{s} was founded by {t}.",
    "hq": "{s} is based in the city {t}.",
    "birthplace": "{s} was born in the city {t}.",
    "employer": "{s} works for the company {t}.",
    "mayor": "The mayor of {s} is {t}.",
}
# the back-link as the target's document states it
BACKLINK = {
    "maker": "{t} makes the product {s}.",
    "founder": "{t} founded the company {s}.",
    "hq": "{t} is home to the company {s}.",
    "birthplace": "{t} is the birthplace of {s}.",
    "employer": "{t} employs {s}.",
    "mayor": "{t} is the mayor of {s}.",
}
# the word of the back-link an expert's query adds ("Ada Quill founded Quillworks")
KEYWORD = {"maker": "makes", "founder": "founded", "hq": "home", "birthplace": "birthplace", "employer": "employs",
           "mayor": "mayor"}
# how a question names "r of x"
PHRASE = {
    "maker": "the company that makes {x}",
    "founder": "the founder of {x}",
    "hq": "the city where {x} is based",
    "birthplace": "the birthplace of {x}",
    "employer": "the employer of {x}",
    "mayor": "the mayor of {x}",
}

ATTRS: dict[str, dict[str, list[str]]] = {
    "person": {
        "trait": ["calm", "restless", "generous", "stern", "cheerful", "quiet", "curious", "patient"],
        "job": ["botanist", "sculptor", "engineer", "pilot", "chemist", "cartographer", "violinist", "architect",
                "surgeon", "weaver", "astronomer", "baker"],
        "hobby": ["chess", "sailing", "beekeeping", "archery", "pottery", "falconry", "rowing", "origami"],
    },
    "company": {
        "size": ["small", "large", "family-run", "listed", "young", "old"],
        "industry": ["shipping", "textiles", "robotics", "ceramics", "software", "brewing", "mining", "optics",
                     "furniture", "printing"],
        "quality": ["careful", "bold", "cheap", "elegant", "durable", "clever"],
    },
    "city": {
        "region": ["coastal", "mountain", "river", "desert", "island", "valley", "forest", "lake"],
        "feature": ["bridges", "markets", "towers", "canals", "gardens", "harbours", "libraries", "festivals"],
        "size": ["small", "large", "busy", "quiet"],
    },
    "product": {
        "color": ["red", "blue", "green", "black", "white", "golden", "silver", "grey"],
        "kind": ["lamp", "kettle", "bicycle", "compass", "loom", "drone", "telescope", "radio", "typewriter", "clock"],
        "market": ["northern", "southern", "eastern", "western", "coastal", "inland"],
    },
}
INTRO = {
    "person": "{n} is a {trait} {job} born in {year} who enjoys {hobby}.",
    "company": "{n} is a {size} {industry} firm established in {year}, known for {quality} work.",
    "city": "{n} is a {size} {region} city chartered in {year}, famous for its {feature}.",
    "product": "{n} is a {color} {kind} launched in {year}, sold in {market} markets.",
}

SYLLABLES = ["ka", "ven", "tor", "mi", "lo", "dra", "sel", "bri", "qua", "zen", "fal", "mor", "tis", "ran", "pel",
             "cor", "vin", "sha", "dol", "rek", "bel", "gor", "hul", "jas", "lun", "nor", "oss", "pry", "sut", "wex",
             "yar", "zul", "ama", "eth", "ix", "ond"]
FIRST_NAMES = ["Ada", "Bran", "Cora", "Dov", "Esme", "Finn", "Greta", "Hale", "Ines", "Joss", "Kira", "Lev", "Mira",
               "Nils", "Oona", "Pim", "Rhea", "Soren", "Tova", "Ulla", "Vik", "Wren", "Yara", "Zane"]

SYSTEM_PROMPT = (
    "You answer questions by searching a collection of documents. Call exactly one tool per turn, written as "
    '<tool_call>{{"name": NAME, "parameters": {{...}}}}</tool_call>. Wait for each result. Several documents may '
    "share a name: open them and check the details.\nTools:\n{tools}"
)
USER_PROMPT = "What is {phrase}? Finish with its exact name."

_TOKEN_RE = re.compile(r"(?u)\b\w\w+\b")  # bm25s's default token pattern
_RESULT_RE = re.compile(r"^\[(d\d+)\] ?(.*)$")


def normalize_answer(text: str) -> str:
    return " ".join(str(text).split()).casefold()


@dataclass
class Entity:
    idx: int
    type: str
    name: str
    year: int
    attrs: dict[str, str]
    rel: dict[str, int] = field(default_factory=dict)  # relation -> target entity index
    back: dict[str, list[int]] = field(default_factory=dict)  # relation -> source entity indices


def _render(e: Entity, year: int, rel: dict[str, int], back: dict[str, list[int]], ents: list[Entity]) -> str:
    intro = INTRO[e.type].format(n=e.name, year=year, **e.attrs)
    intro = re.sub(r"\ba ([aeiou])", r"an \1", intro)
    parts = [f"{e.name} ({e.type}).", intro]
    for r in OUT_RELATIONS[e.type]:
        if r in rel:
            parts.append(FACT[r].format(s=e.name, t=ents[rel[r]].name))
    for r in IN_RELATIONS[e.type]:
        for src in back.get(r, []):
            parts.append(BACKLINK[r].format(t=e.name, s=ents[src].name))
    return " ".join(parts)


class World:
    """The seeded entities, their documents (true + namesakes) and the BM25 index over them."""

    def __init__(self, seed: int, num_entities: int, distractors: int) -> None:
        import bm25s  # imported here: only the search env needs it

        if num_entities < 8:
            raise ValueError(f"search.num_entities must be at least 8, got {num_entities}")
        if distractors < 0:
            raise ValueError(f"search.distractors must be ≥ 0, got {distractors}")
        self.seed, self.num_entities, self.distractors = seed, num_entities, distractors
        rng = random.Random(f"search-world-{seed}-{num_entities}-{distractors}")
        self.entities = self._entities(rng, num_entities)
        self.by_type = {t: [e.idx for e in self.entities if e.type == t] for t in TYPES}
        self.by_name = {e.name: e.idx for e in self.entities}
        self._relations(rng)

        # documents: one true document and `distractors` namesakes per entity, in a shuffled order (ids by position)
        raw: list[tuple[int, bool, str]] = []  # (entity idx, is true, text)
        for e in self.entities:
            raw.append((e.idx, True, _render(e, e.year, e.rel, e.back, self.entities)))
            for year, rel, back in self._namesakes(rng, e):
                raw.append((e.idx, False, _render(e, year, rel, back, self.entities)))
        rng.shuffle(raw)
        width = max(4, len(str(len(raw) - 1)))
        self.doc_ids = [f"d{i:0{width}d}" for i in range(len(raw))]
        self.texts = [text for _, _, text in raw]
        self.doc_entity = [idx for idx, _, _ in raw]
        self.doc_is_true = [is_true for _, is_true, _ in raw]
        self.doc_index = {d: i for i, d in enumerate(self.doc_ids)}
        self.true_doc = {idx: i for i, (idx, is_true, _) in enumerate(raw) if is_true}
        self.namesake_docs: dict[int, list[int]] = {}
        for i, (idx, is_true, _) in enumerate(raw):
            if not is_true:
                self.namesake_docs.setdefault(idx, []).append(i)

        self.bm25 = bm25s.BM25()
        self.bm25.index(bm25s.tokenize(self.texts, stopwords="en", show_progress=False), show_progress=False)
        self._stopwords = set(bm25s.stopwords.STOPWORDS_EN)

    # -- construction

    @staticmethod
    def _entities(rng: random.Random, n: int) -> list[Entity]:
        counts = {t: max(1, int(round(n * TYPE_SHARE[t]))) for t in TYPES}
        counts["person"] += n - sum(counts.values())  # the remainder
        if counts["person"] < 1:
            raise ValueError(f"search.num_entities={n} is too small")
        used_words: set[str] = set()
        used_names: set[str] = set()

        def word() -> str:
            for _ in range(10_000):
                w = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize()
                if w not in used_words:
                    used_words.add(w)
                    return w
            raise ValueError("search: ran out of entity names; lower search.num_entities")

        ents: list[Entity] = []
        for t in TYPES:
            lo, hi = YEARS[t]
            for _ in range(counts[t]):
                if t == "person":
                    name = f"{rng.choice(FIRST_NAMES)} {word()}"
                else:
                    name = word()
                if name in used_names:  # cannot happen (last words are unique); kept as a guard
                    raise ValueError("search: duplicate entity name")
                used_names.add(name)
                attrs = {k: rng.choice(v) for k, v in ATTRS[t].items()}
                ents.append(Entity(len(ents), t, name, rng.randint(lo, hi), attrs))
        return ents

    def _relations(self, rng: random.Random) -> None:
        """Each relation maps every source to a target, with targets balanced (bounded in-degree)."""
        for r, (src_t, dst_t) in RELATIONS.items():
            srcs, dsts = self.by_type[src_t], self.by_type[dst_t]
            pool: list[int] = []
            while len(pool) < len(srcs):
                block = list(dsts)
                rng.shuffle(block)
                pool.extend(block)
            for s, d in zip(srcs, pool):
                self.entities[s].rel[r] = d
                self.entities[d].back.setdefault(r, []).append(s)

    def _namesakes(self, rng: random.Random, e: Entity):
        """Namesake documents of ``e``: other years, and every relation and back-link pointing elsewhere.

        The first namesake is the most confusable: where it can, its facts name the entities that link to ``e`` in
        another role ("Torlo was founded by Hale Ixrek" where the true Torlo *employs* Hale Ixrek), so a query
        "<name> <linking entity>" ranks it next to the true document and only reading tells them apart.
        """
        lo, hi = YEARS[e.type]
        years = rng.sample([y for y in range(lo, hi + 1) if y != e.year], min(self.distractors, hi - lo))
        neighbours = {e.idx, *e.rel.values(), *(s for srcs in e.back.values() for s in srcs)}
        linking = sorted({s for srcs in e.back.values() for s in srcs})
        for k, year in enumerate(years):
            rel = {}
            for r in OUT_RELATIONS[e.type]:
                dst_t = RELATIONS[r][1]
                confusing = [d for d in linking if self.entities[d].type == dst_t and d != e.rel[r]]
                options = [d for d in self.by_type[dst_t] if d not in neighbours]
                if k == 0 and confusing:
                    rel[r] = rng.choice(confusing)
                elif options:
                    rel[r] = rng.choice(options)
            back = {}
            for r, srcs in e.back.items():
                options = [s for s in self.by_type[RELATIONS[r][0]] if s not in neighbours]
                if options:
                    back[r] = rng.sample(options, min(len(srcs), len(options)))
            yield year, rel, back

    # -- queries

    def query_tokens(self, query: str) -> list[str]:
        return [t for t in _TOKEN_RE.findall(query.lower()) if t not in self._stopwords]

    def search(self, query: str, k: int) -> list[int]:
        """Indices of the top-``k`` documents with a positive score (ties broken by document id)."""
        tokens = [t for t in self.query_tokens(query) if t in self.bm25.vocab_dict]
        if not tokens:
            return []
        scores = np.asarray(self.bm25.get_scores(tokens), dtype=np.float64)
        order = np.lexsort((np.arange(len(scores)), -scores))[:k]
        return [int(i) for i in order if scores[i] > 0]

    def value(self, name: str, relation: str) -> str | None:
        """The true target of ``relation`` for the real entity named ``name`` (None if no such entity/relation)."""
        idx = self.by_name.get(name)
        if idx is None or relation not in self.entities[idx].rel:
            return None
        return self.entities[self.entities[idx].rel[relation]].name


_WORLDS: dict[tuple[int, int, int], World] = {}
_WORLDS_LOCK = threading.Lock()


def get_world(seed: int, num_entities: int, distractors: int) -> World:
    """The cached world for these knobs (built once per process)."""
    key = (int(seed), int(num_entities), int(distractors))
    with _WORLDS_LOCK:
        w = _WORLDS.get(key)
        if w is None:
            if len(_WORLDS) >= 4:  # a process normally needs one; keep memory bounded
                _WORLDS.pop(next(iter(_WORLDS)))
            w = _WORLDS[key] = World(*key)
        return w


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

    The corpus depends on ``seed``, ``num_entities`` and ``distractors`` only. With these defaults and a 1K BPE, a search
    result is about 160 tokens (230 at most), an opened document about 80 (115 at most), so the budgets need
    ``budget.max_obs_tokens`` ≥ 232, ``budget.max_summary_tokens`` ≥ 48 and a working context of about 400–512 tokens.
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


# ----------------------------------------------------------------------------------------------------------------------
# the scripted expert

MAX_ATTEMPTS = 2  # per hop: 0 = open the hits titled <name> until one meets the constraint, 1 = take the first one


@dataclass(frozen=True)
class ExpertState:
    facts: tuple[str, ...] = ()  # entity names found, one per completed hop
    cands: tuple[str, ...] | None = None  # doc ids still to open for the current hop (None: search first)
    attempt: int = 0  # 0: verify each hit; 1: take the first hit titled right; MAX_ATTEMPTS: give up and answer
    rejected: frozenset[str] = frozenset()  # namesakes opened and rejected in this hop


def _title_matches(snippet: str, name: str) -> bool:
    head = f"{name} ("
    return snippet.startswith(head) or (len(snippet) < len(head) and head.startswith(snippet))


class SearchExpert:
    """Solves a question hop by hop through the tools; its summaries are wrong at ``error_rate``.

    Protocol (as :class:`~supo.envs.array.ArrayExpert`): :meth:`act` returns the next action text, :meth:`observe`
    is told each (action, observation), :meth:`drop` forgets the last one (the trigger removed it from the context),
    :meth:`summarize` writes a ``<summary>`` and continues from exactly what it wrote.
    """

    def __init__(self, task: Task, error_rate: float = 0.0, seed: int = 0) -> None:
        c = task.env_config
        self.world = get_world(c["seed"], c["num_entities"], c["distractors"])
        self.relations: list[str] = list(c["relations"])
        self.anchor: str = c["chain"][0]
        self.anchor_type: str = c["anchor_type"]
        self.anchor_year = int(c["anchor_year"])
        self.error_rate = error_rate
        self.rng = random.Random(f"search-expert-{seed}-{task.id}")
        self.state = ExpertState()
        self._history: list[ExpertState] = []
        self.summary_errors = 0

    # -- what the current hop looks for

    def _subject(self, s: ExpertState) -> str:
        """The entity whose document the current hop must read."""
        return s.facts[-1] if s.facts else self.anchor

    def _constraint(self, s: ExpertState) -> tuple[str, str]:
        """(query words, the phrase the right document contains) that tell it from its namesakes: the anchor's year,
        or the back-link to the entity the hop came from."""
        j = len(s.facts)
        if j == 0:
            return str(self.anchor_year), f"{YEAR_VERB[self.anchor_type]} in {self.anchor_year}"
        parent, rel = (s.facts[-2] if j >= 2 else self.anchor), self.relations[j - 1]
        return f"{KEYWORD[rel]} {parent}", BACKLINK[rel].format(t=s.facts[-1], s=parent)

    def query(self, s: ExpertState | None = None) -> str:
        """``"<entity> <year>"`` for the anchor, ``"<entity> <back-link word> <previous entity>"`` after it."""
        s = s or self.state
        words, _ = self._constraint(s)
        return f"{self._subject(s)} {words}"

    def _guess(self) -> str:
        return self.state.facts[-1] if self.state.facts else self.anchor

    # -- the protocol

    def act(self) -> str:
        s = self.state
        if len(s.facts) >= len(self.relations) or s.attempt >= MAX_ATTEMPTS:
            return format_tool_call("finish", answer=self._guess())
        if s.cands is None:
            return format_tool_call("search", query=self.query(s))
        return format_tool_call("open", doc_id=s.cands[0])

    def observe(self, action: str, observation: str) -> None:
        self._history.append(self.state)
        try:
            call = parse_tool_call(action)
        except ToolCallError:
            return
        if observation.startswith("Error"):
            return
        s = self.state
        if call.name == "search":
            hits = [m.groups() for m in map(_RESULT_RE.match, observation.splitlines()) if m]
            name = self._subject(s)
            cands = tuple(d for d, snip in hits if _title_matches(snip, name)
                          and (s.attempt == MAX_ATTEMPTS - 1 or d not in s.rejected))
            if s.attempt == MAX_ATTEMPTS - 1:
                cands = cands[:1]
            self.state = replace(s, cands=cands) if cands else replace(s, cands=None, attempt=s.attempt + 1)
        elif call.name == "open":
            doc_id = str(call.parameters.get("doc_id", ""))
            self.state = self._read(s, doc_id, observation)

    def _read(self, s: ExpertState, doc_id: str, observation: str) -> ExpertState:
        name = self._subject(s)
        text = observation.split("] ", 1)[1] if observation.startswith("[") and "] " in observation else observation
        sloppy = s.attempt == MAX_ATTEMPTS - 1
        _, phrase = self._constraint(s)
        ok = text.startswith(f"{name} (") and (sloppy or phrase in text)
        if ok:
            value = extract(text, name, self.relations[len(s.facts)])
            if value is not None:
                return ExpertState(facts=(*s.facts, value))
        if sloppy:  # nothing usable even taking the first hit: give up and answer
            return replace(s, cands=None, attempt=MAX_ATTEMPTS)
        if s.cands is None:  # a document it did not plan to open: remember it, keep the plan
            return replace(s, rejected=s.rejected | {doc_id})
        cands = tuple(d for d in (s.cands or ()) if d != doc_id)
        rejected = s.rejected | {doc_id}
        if cands:
            return replace(s, cands=cands, rejected=rejected)
        return replace(s, cands=None, attempt=s.attempt + 1, rejected=rejected)

    def drop(self) -> None:
        """The last (action, observation) left the context: forget what it taught."""
        if self._history:
            self.state = self._history.pop()

    def _wrong_value(self, s: ExpertState) -> str:
        """What a namesake of the last fact's source states instead (a plausible misreading)."""
        j = len(s.facts)
        rel = self.relations[j - 1]
        source = s.facts[-2] if j >= 2 else self.anchor
        w = self.world
        src_idx = w.by_name.get(source)
        options: list[str] = []
        if src_idx is not None:
            for di in w.namesake_docs.get(src_idx, []):
                v = extract(w.texts[di], source, rel)
                if v is not None and v != s.facts[-1]:
                    options.append(v)
        if not options:
            options = [w.entities[i].name for i in w.by_type[RELATIONS[rel][1]] if w.entities[i].name != s.facts[-1]]
        return self.rng.choice(sorted(set(options)))

    def summarize(self) -> str:
        s = self.state
        state = ExpertState(facts=s.facts, cands=s.cands, attempt=min(s.attempt, MAX_ATTEMPTS - 1))
        if s.facts and self.rng.random() < self.error_rate:
            state = ExpertState(facts=(*s.facts[:-1], self._wrong_value(s)))
            self.summary_errors += 1
        self.state = state
        self._history.clear()
        return summary_text(self.relations, state)


def extract(text: str, name: str, relation: str) -> str | None:
    """The value of ``relation`` stated in a document about ``name`` (None if it states none)."""
    pattern = re.escape(FACT[relation].format(s=name, t="\x00")).replace("\x00", r"([A-Z][A-Za-z ]*?)")
    m = re.search(pattern, text)
    return m.group(1) if m else None


def summary_text(relations: list[str], s: ExpertState) -> str:
    h, j = len(relations), len(s.facts)
    head = f"all {h} hops done" if j >= h else f"hop {j + 1} of {h}"
    found = ", ".join(f"{r} = {v}" for r, v in zip(relations, s.facts)) or "nothing yet"
    body = f"{head}; found: {found}"
    if s.cands:
        body += f"; open next: {' '.join(s.cands)}"
    if s.attempt:
        body += f"; {NO_MATCH}"
    return f"{SUMMARY_OPEN}{body}{SUMMARY_CLOSE}"


NO_MATCH = "no hit matched, take the first"
_SUMMARY_RE = re.compile(r"^(?:hop \d+ of \d+|all \d+ hops done); found: (.*?)(?:; open next: ([d\d ]+))?"
                         r"(; " + re.escape(NO_MATCH) + r")?$")


def parse_summary(text: str, relations: list[str]) -> ExpertState | None:
    """The expert state a summary written by :func:`summary_text` describes (None if it is not one)."""
    body = text.removeprefix(SUMMARY_OPEN).removesuffix(SUMMARY_CLOSE)
    m = _SUMMARY_RE.match(body)
    if not m:
        return None
    facts: list[str] = []
    if m.group(1) != "nothing yet":
        for part, r in zip(m.group(1).split(", "), relations):
            key, _, value = part.partition(" = ")
            if key != r:
                return None
            facts.append(value)
    cands = tuple(m.group(2).split()) if m.group(2) else None
    return ExpertState(facts=tuple(facts), cands=cands, attempt=1 if m.group(3) else 0)


def expert_factory(task: Task, error_rate: float, seed: int) -> SearchExpert:
    return SearchExpert(task, error_rate=error_rate, seed=seed)


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


SPEC = EnvSpec(name="search", section="search", options=SearchEnvConfig, make_split=make_split, make_env=make_env,
               make_expert=expert_factory, corpus=corpus, validate_env_config=validate_env_config,
               make_tasks=make_tasks)
