"""Tests for supo.synth: the API graph and Eq. 2, the task families' backends, FunReason-MT-style task synthesis
(Phase I walks, Phase II advanced tools and hard queries) and the Phase III filter (scripted solver + critic)."""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter

import pytest

from supo.synth.api_graph import APIGraph, APIGraphError, Param, Tool, directed_sample, walk
from supo.synth.families import FAMILIES, get_family
from supo.synth.family_base import output_value
from supo.synth.phases import FINISH, Call, Candidate
from supo.synth.solver import ScriptedSolver, critic, validate
from supo.synth.tasks import make_candidate, make_tasks, synthesize

ALL = sorted(FAMILIES)


def _graph(*specs: tuple[str, tuple[str, ...]]) -> APIGraph:
    return APIGraph(Tool(name, name, (), f"{name}_out", req) for name, req in specs)


# A diamond-ish graph:  r1 -> a -> b -> T ;  r2 -> T ;  x (unrelated root) ; y requires T
DIAMOND = _graph(("r1", ()), ("a", ("r1",)), ("b", ("a",)), ("r2", ()), ("T", ("b", "r2")), ("x", ()),
                 ("y", ("T",)))
# Two prerequisites at the same distance: p, q -> T
TIE = _graph(("p", ()), ("q", ()), ("T", ("p", "q")), ("z", ()))


# ---------------------------------------------------------------------------------------------------------------------
# the API graph


def test_legality_is_prerequisites_subset_of_called():
    assert DIAMOND.legal(set()) == ["r1", "r2", "x"]
    assert DIAMOND.legal({"r1"}) == ["r1", "a", "r2", "x"]
    assert not DIAMOND.is_legal("T", {"r1", "a", "b"})
    assert DIAMOND.is_legal("T", {"b", "r2"})  # only direct prerequisites are checked
    assert DIAMOND.legal({"r1", "a", "b", "r2", "T"}) == ["r1", "a", "b", "r2", "T", "x", "y"]


def test_distance_on_the_prerequisite_graph():
    d = DIAMOND.distance
    assert d("r1", "T") == 3 and d("a", "T") == 2 and d("b", "T") == 1 and d("r2", "T") == 1 and d("T", "T") == 0
    assert d("x", "T") == math.inf and d("T", "r1") == math.inf  # not an ancestor / wrong direction
    assert d("r1", "y") == 4
    assert DIAMOND.ancestors("T") == {"r1", "a", "b", "r2"}
    with pytest.raises(APIGraphError, match="unknown tool"):
        d("nope", "T")


@pytest.mark.parametrize(
    "specs",
    [
        [("a", ("a",))],
        [("a", ("b",)), ("b", ("a",))],
        [("a", ()), ("b", ("a", "d")), ("c", ("b",)), ("d", ("c",))],
    ],
)
def test_cycles_are_rejected_and_named(specs):
    with pytest.raises(APIGraphError, match="cycle") as ei:
        _graph(*specs)
    names = re.findall(r"\w+", str(ei.value).split(":", 1)[1])
    assert set(names) - {"requires"} <= {n for n, _ in specs}


def test_unknown_prerequisite_duplicates_and_bad_types_are_rejected():
    with pytest.raises(APIGraphError, match=r"'b' requires unknown tool\(s\) \['ghost'\]"):
        _graph(("a", ()), ("b", ("ghost",)))
    with pytest.raises(APIGraphError, match="duplicate"):
        _graph(("a", ()), ("a", ()))
    with pytest.raises(APIGraphError, match="type"):
        APIGraph([Tool("a", "a", (Param("x", float),))])
    with pytest.raises(APIGraphError, match="identifier"):
        _graph(("not a name", ()))


def test_references_follow_output_names_of_ancestors():
    g = APIGraph([
        Tool("get_zipcode", "", (Param("city", str),), "zip"),
        Tool("get_airport", "", (Param("zip", str),), "airport", ("get_zipcode",)),
        Tool("find_flight", "", (Param("airport", str), Param("destination", str), Param("zip", str)), "flight",
             ("get_airport",)),
    ])
    assert g.refs("get_airport") == {"zip": "get_zipcode"}
    assert g.refs("find_flight") == {"airport": "get_airport", "zip": "get_zipcode"}  # transitive ancestors count
    assert g.literals("find_flight") == ["destination"]
    assert g.walk_literals("find_flight") == ["city", "destination"]
    with pytest.raises(APIGraphError, match="could come from"):
        APIGraph([Tool("a", "", (), "v"), Tool("b", "", (), "v"), Tool("c", "", (Param("v", str),), "o", ("a", "b"))])


# ---------------------------------------------------------------------------------------------------------------------
# Eq. 2


def test_eq2_after_target_is_random_legal_tool():
    called = {"r1", "a", "b", "r2", "T"}
    picks = Counter(directed_sample(DIAMOND, "T", called, random.Random(s)) for s in range(400))
    assert set(picks) == set(DIAMOND.legal(called))  # every legal tool, uniform-ish, nothing illegal
    assert min(picks.values()) > 20
    # a legal-but-uncalled tool is possible, an illegal one never
    picks = {directed_sample(DIAMOND, "r1", {"r1"}, random.Random(s)) for s in range(200)}
    assert picks == set(DIAMOND.legal({"r1"})) and "b" not in picks
    assert [directed_sample(DIAMOND, "T", called, random.Random(7)) for _ in range(3)] == \
        [directed_sample(DIAMOND, "T", called, random.Random(7)) for _ in range(3)]


def test_eq2_target_legal_is_target():
    for s in range(50):
        assert directed_sample(DIAMOND, "T", {"b", "r2"}, random.Random(s)) == "T"
        assert directed_sample(DIAMOND, "r1", set(), random.Random(s)) == "r1"
        assert directed_sample(TIE, "T", {"p", "q", "z"}, random.Random(s)) == "T"


def test_eq2_otherwise_argmin_distance():
    rng = random.Random(0)
    # r2 (distance 1) beats r1 (3); x is not on a path (inf)
    assert directed_sample(DIAMOND, "T", set(), rng) == "r2"
    # then r1 is the only uncalled legal ancestor: the walk makes progress (called tools are not re-picked)
    assert directed_sample(DIAMOND, "T", {"r2"}, rng) == "r1"
    assert directed_sample(DIAMOND, "T", {"r2", "r1"}, rng) == "a"
    assert directed_sample(DIAMOND, "T", {"r1", "a", "r2"}, rng) == "b"
    assert walk(DIAMOND, "T", random.Random(1)) == ["r2", "r1", "a", "b", "T"]
    with pytest.raises(APIGraphError, match="unknown tool"):
        directed_sample(DIAMOND, "nope", set(), rng)


def test_eq2_ties_are_deterministic_for_a_seed_and_cover_both():
    firsts = [directed_sample(TIE, "T", set(), random.Random(s)) for s in range(200)]
    assert set(firsts) == {"p", "q"}  # z is legal but not on a path
    again = [directed_sample(TIE, "T", set(), random.Random(s)) for s in range(200)]
    assert firsts == again
    walks = {tuple(walk(TIE, "T", random.Random(s))) for s in range(100)}
    assert walks == {("p", "q", "T"), ("q", "p", "T")}


def test_walks_are_legal_and_minimal_in_every_family():
    for name in ALL:
        g = get_family(name).graph
        for target in g:
            for s in range(5):
                seq = walk(g, target, random.Random(s))
                assert seq[-1] == target and sorted(seq[:-1]) == sorted(g.ancestors(target))
                called: set[str] = set()
                for t in seq:
                    assert g.is_legal(t, called)
                    called.add(t)


# ---------------------------------------------------------------------------------------------------------------------
# families


@pytest.mark.parametrize("name", ALL)
def test_family_backend_is_deterministic_and_repeat_safe(name):
    """Every ground-truth call, repeated at once (what a trigger drop causes), gives the same answer and state."""
    fam = get_family(name)
    rng = random.Random(5)
    for _ in range(40):
        cand = make_candidate(fam, rng.randint(4, 14), rng)
        assert cand is not None
        once, twice = fam.backend(cand.state), fam.backend(cand.state)
        for c in cand.calls[:-1]:
            obs = once.execute(c.name, c.params)
            assert obs == c.observation and not obs.startswith("Error")
            assert twice.execute(c.name, c.params) == obs
            assert twice.execute(c.name, c.params) == obs, (c.name, c.params)
        assert once.verified_json() == twice.verified_json() == cand.expected_state
        assert json.loads(cand.expected_state) is not None


@pytest.mark.parametrize("name", ALL)
def test_family_refuses_bad_calls_with_errors(name):
    fam = get_family(name)
    b = fam.backend(fam.make_state(random.Random(0)))
    for tool in fam.graph:
        t = fam.graph[tool]
        bad = {p.name: ("zz-nothing" if p.type is str else 10**9) for p in t.params}
        obs = b.execute(tool, bad)
        assert obs.startswith("Error:") if t.params else not obs.startswith("Error")
        assert b.execute(tool, {**bad, "extra": 1}).startswith("Error:")
    assert b.execute("nope", {}).startswith("Error: unknown tool")


def test_family_validation_rejects_templates_that_name_tools_or_miss_arguments():
    from supo.synth.family_travel import TravelFamily

    with pytest.raises(ValueError, match="names tool"):
        TravelFamily(goal_templates={**TravelFamily().goal_templates,
                                     "get_zipcode": ("call get_zipcode for {city}",)})
    with pytest.raises(ValueError, match="must mention exactly"):
        TravelFamily(goal_templates={**TravelFamily().goal_templates, "buy_ticket": ("book {passenger} a flight",)})


# ---------------------------------------------------------------------------------------------------------------------
# tasks


@pytest.fixture(scope="module")
def train_tasks():
    return make_tasks("train", 160, 4, 10, ALL, seed=3)


def test_make_tasks_is_deterministic_for_a_seed():
    a = make_tasks("train", 24, 4, 10, ALL, seed=7)
    b = make_tasks("train", 24, 4, 10, ALL, seed=7)
    assert a == b
    c = make_tasks("train", 24, 4, 10, ALL, seed=8)
    d = make_tasks("test", 24, 4, 10, ALL, seed=7)
    assert [t.env_config for t in a] != [t.env_config for t in c]
    assert [t.env_config for t in a] != [t.env_config for t in d]
    assert [t.env_config["family"] for t in a[:8]] == ALL + ALL
    assert len({t.id for t in a}) == len(a) and all(t.id.startswith("train-") and t.env == "funcall" for t in a)


@pytest.mark.parametrize(("lo", "hi"), [(4, 10), (8, 14), (5, 5)])
def test_difficulty_is_the_number_of_calls_and_within_bounds(lo, hi):
    tasks, stats = make_tasks("train", 120, lo, hi, ALL, seed=1, return_stats=True)
    ks = [t.difficulty for t in tasks]
    assert all(lo <= k <= hi for k in ks) and all(k == len(t.env_config["plan"]) for k, t in zip(ks, tasks))
    assert min(ks) == lo and max(ks) == hi
    assert set(stats) == set(ALL)


def test_test_split_needs_more_calls_on_average():
    from supo.config import load_config
    from supo.envs.funcall import build_split

    cfg = load_config(None, overrides={"funcall.num_train": 80, "funcall.num_test": 80})
    train, test = build_split(cfg, "train"), build_split(cfg, "test")
    mean = lambda ts: sum(t.difficulty for t in ts) / len(ts)  # noqa: E731
    assert mean(test) > mean(train) + 2
    assert all(cfg.funcall.test_min_calls <= t.difficulty <= cfg.funcall.test_max_calls for t in test)
    assert all(t.split == "test" for t in test)


def test_ground_truth_is_eq2_walks_plus_finish(train_tasks):
    for t in train_tasks:
        fam = get_family(t.env_config["family"])
        g = fam.graph
        plan = t.env_config["plan"]
        assert plan[-1]["name"] == FINISH and plan[-1]["refs"] == {"answer": len(plan) - 2}
        assert plan[-1]["params"]["answer"] == t.reference
        start = 0
        for adv in t.env_config["advanced_tools"]:
            steps = plan[start: start + len(adv["sub_tools"])]
            roles = [s["role"] for s in steps]
            assert roles in (["prereq"] * (len(steps) - 1) + ["target"],
                             ["prereq"] * (len(steps) - 2) + ["target", "explore"]), roles
            target = next(s["name"] for s in steps if s["role"] == "target")
            # the walk: every ancestor of the target once, each legal when called, then the target
            prereqs = [s["name"] for s in steps if s["role"] == "prereq"]
            assert sorted(prereqs) == sorted(g.ancestors(target))
            called: set[str] = set()
            for k, s in enumerate(steps):
                assert g.is_legal(s["name"], called), (t.id, s)
                called.add(s["name"])
                for p, i in s["refs"].items():  # data flow stays inside the request, from earlier calls
                    assert start <= i < start + k and g.refs(s["name"])[p] == plan[i]["name"]
            start += len(steps)
        assert start == len(plan) - 1


def test_query_hides_prerequisite_tools(train_tasks):
    for t in train_tasks:
        fam = get_family(t.env_config["family"])
        query = t.prompt[1]["content"].lower()
        words = set(re.findall(r"[a-z_]+", query))
        prereqs = {s["name"] for s in t.env_config["plan"] if s["role"] == "prereq"}
        assert not prereqs & words, (t.id, prereqs & words, query)
        assert not set(fam.graph) & words  # no tool is named at all: goals are paraphrased
        # the goal is named: every request argument appears in the query
        for adv in t.env_config["advanced_tools"]:
            for v in adv["arguments"].values():
                assert str(v).lower() in query, (t.id, v, query)


def test_query_hides_the_prerequisite_calls_behind_one_sentence_per_request(train_tasks):
    n_prereq = sum(s["role"] == "prereq" for t in train_tasks for s in t.env_config["plan"])
    assert n_prereq > len(train_tasks)  # there is something to hide
    solver = ScriptedSolver()
    for t in train_tasks:
        fam = get_family(t.env_config["family"])
        requests = solver.parse(t.prompt[1]["content"], fam)
        plan = t.env_config["plan"]
        assert [r.target for r in requests] == [s["name"] for s in plan if s["role"] == "target"]
        assert [r.follow for r in requests if r.follow] == [s["name"] for s in plan if s["role"] == "explore"]


def test_advanced_tools_wrap_each_request(train_tasks):
    for t in train_tasks:
        plan, advs = t.env_config["plan"], t.env_config["advanced_tools"]
        assert sum(len(a["sub_tools"]) for a in advs) == len(plan) - 1
        assert [n for a in advs for n in a["sub_tools"]] == [s["name"] for s in plan[:-1]]
        for a in advs:
            assert a["name"].endswith("_adv") and "Wraps " + ", ".join(a["sub_tools"]) in a["description"]
            assert set(a["params"]) == set(a["arguments"])


def test_noise_and_paraphrase_vary_the_queries():
    tasks = make_tasks("train", 200, 4, 10, ["travel"], seed=2)
    queries = [t.prompt[1]["content"] for t in tasks]
    assert len(set(queries)) == len(queries)
    assert sum(any(f in q for f in ("prefers window seats", "weather in", "flew to", "Thanks", "urgent",
                                    "new to this", "simple", "weekly report")) for q in queries) > 40
    openings = Counter(q.split(",")[0].split(" ")[0] for q in queries)
    assert len(openings) >= 4


# ---------------------------------------------------------------------------------------------------------------------
# Phase III


def test_solver_sees_no_ground_truth_and_reproduces_it():
    fam = get_family("travel")
    cand = make_candidate(fam, 12, random.Random(4))
    backend = fam.backend(cand.state)
    got = ScriptedSolver()(cand.query, fam, backend.execute, {})
    assert critic(got, cand.calls) is None
    assert got[-1].params["answer"] == cand.answer


def test_critic_names_the_first_mismatch():
    truth = [Call("a", {"x": 1}), Call("b", {}), Call(FINISH, {"answer": "v"})]
    assert critic(truth, truth) is None
    h = critic([Call("a", {"x": 1}), Call("c", {})], truth)
    assert h.position == 1 and h.expected.name == "b" and "Call 2 should be b()" in h.text()
    h = critic([Call("a", {"x": "1"})], truth)  # 1 and "1" differ
    assert h.position == 0
    h = critic(truth[:2], truth)
    assert h.position == 2 and "not nothing" in h.text()


def test_hints_fix_tie_order_mismatches_within_k_max():
    """Bank/inventory have prerequisites at equal distance: Eq. 2 orders them at random, the solver by the docs."""
    for name in ("bank", "inventory"):
        kept1, s1 = synthesize(name, "train", 60, 6, 12, seed=0, k_max=1)
        kept3, s3 = synthesize(name, "train", 60, 6, 12, seed=0, k_max=3)
        assert s1.kept_share < 0.9, s1  # without hints, tie orders make the solver miss
        assert s3.first_try < s3.kept and s3.kept_share > s1.kept_share
        assert all(v.attempts == 1 for _, v in kept1)
        hinted = [v for _, v in kept3 if v.attempts > 1]
        assert hinted and all(v.hints and v.hints[0].startswith("Call ") for v in hinted)


class Faulty:
    """A solver that gets some tasks wrong on purpose and ignores hints."""

    def __init__(self, bad) -> None:
        self.inner, self.bad = ScriptedSolver(), bad
        self.calls: dict[str, list[Call]] = {}

    def __call__(self, query, family, execute, hints):
        got = self.inner(query, family, execute, {})
        if self.bad(query):
            got[-1] = Call(FINISH, {"answer": "wrong"})
        self.calls[query] = got
        return got


def test_filter_keeps_only_matching_samples():
    bad = lambda q: len(q) % 3 == 0  # noqa: E731 - an arbitrary third of the queries
    solver = Faulty(bad)
    kept, stats = synthesize("files", "train", 60, 4, 10, seed=9, solver=solver)
    assert len(kept) == 60 and stats.candidates > 60 and stats.kept == 60
    assert 0.4 < stats.kept_share < 0.9
    for cand, v in kept:
        assert not bad(cand.query) and v.passed
        assert critic(solver.calls[cand.query], cand.calls) is None  # kept => the solver's calls match
    dropped = [q for q in solver.calls if bad(q)]
    assert dropped and not {c.query for c, _ in kept} & set(dropped)


def test_validate_drops_a_solver_that_skips_a_prerequisite():
    fam = get_family("travel")
    cand = make_candidate(fam, 8, random.Random(1))

    def skipper(query, family, execute, hints):
        got = ScriptedSolver()(query, family, execute, {})
        return got[1:]

    v = validate(cand, skipper, k_max=3)
    assert not v.passed and v.attempts == 2 and v.hints  # the repeated hint was ignored: no more attempts
    assert validate(cand, ScriptedSolver(), k_max=1).passed


def test_candidate_fields_are_consistent():
    fam = get_family("inventory")
    cand = make_candidate(fam, 9, random.Random(2))
    assert isinstance(cand, Candidate) and len(cand.calls) == 9
    assert cand.answer == output_value(cand.answer_observation) == cand.calls[-1].params["answer"]
    assert cand.calls[-2].observation == cand.answer_observation
