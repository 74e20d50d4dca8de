"""The search environment's world (``supo.envs.search``): a seeded corpus of fictional entities with hard negatives.

Entities of four types — people, companies, cities and products — with attributes and functional relations, each
rendered as one short document (title, attributes, outgoing facts, back-links), plus ``distractors`` namesake
documents per entity (same name, type and attribute words, other facts). The corpus and its BM25 index depend only
on ``(seed, num_entities, distractors)`` and are built once per process (:func:`get_world`).
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field

import numpy as np

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
RESULT_RE = re.compile(r"^\[(d\d+)\] ?(.*)$")


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
