"""The search environment's scripted expert (``supo.envs.search``): it solves a hop by searching the entity with its
anchor year or back-link word, opening the hits titled with the entity until one meets the constraint, and carries
the facts found and the hits still to open in its summaries; at ``error_rate`` a summary states a namesake's fact.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace

from supo.envs.base import ToolCallError, format_tool_call, parse_tool_call
from supo.envs.search_world import BACKLINK, FACT, KEYWORD, RELATIONS, RESULT_RE, YEAR_VERB, get_world
from supo.models import SUMMARY_CLOSE, SUMMARY_OPEN
from supo.types import Task

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
            hits = [m.groups() for m in map(RESULT_RE.match, observation.splitlines()) if m]
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
    """The expert state a summary written by :func:`summary_text` describes, with or without the summary tags around
    it (None if it is not one: the state read must write back to the same text, so a head that miscounts the hops or
    more facts than hops is refused)."""
    body = text.strip().removeprefix(SUMMARY_OPEN).removesuffix(SUMMARY_CLOSE).strip()
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
    state = ExpertState(facts=tuple(facts), cands=cands, attempt=1 if m.group(3) else 0)
    return state if summary_text(relations, state) == f"{SUMMARY_OPEN}{body}{SUMMARY_CLOSE}" else None


def summary_oracle(task: Task, text: str) -> bool:
    """Does a summary carry the state needed to continue (``EnvSpec.summary_oracle``; the summaries themselves
    measured)? The state is the chain resolved so far: the text must be in the expert's wording (:func:`parse_summary`
    reads it back, else False), and the facts it states, one per hop in the task's ``relations`` order, must be a
    prefix of the task's ground-truth ``chain`` after the anchor (``found: nothing yet`` is the empty prefix and
    passes). The search progress it may also carry (the hits still to open, "take the first") is not judged: it costs
    steps, not the answer; so does restating an earlier, still correct prefix."""
    cfg = task.env_config
    state = parse_summary(text, list(cfg["relations"]))
    if state is None:
        return False
    return list(state.facts) == list(cfg["chain"][1: 1 + len(state.facts)])


def expert_factory(task: Task, error_rate: float, seed: int) -> SearchExpert:
    return SearchExpert(task, error_rate=error_rate, seed=seed)
