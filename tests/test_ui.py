"""`supo-cli ui` and its parts against real sqlite MLflow stores (no mocks): the saved views read back, the arm colours,
the links between runs, and the UI server — ready when it says so, stopped with every child on Ctrl-C or SIGTERM at
any point of start-up, under CPU load. Every process a test starts is killed by a fixture whatever happens."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from cli_helpers import REPO, assert_input_error, run_cli, stage_run
from mlflow import MlflowClient

from supo.tracking import Tracker
from supo.tracking_links import (
    config_from_params,
    link_eval,
    link_report,
    own_setting,
    relocate_artifacts,
    sft_run_id,
    tag_own_setting,
)
from supo.tracking_ui import experiment_url, start_ui, stop_ui, wait_for_ui
from supo.tracking_views import (
    RUN_COLOUR_TAG,
    arm_palette,
    colour_runs,
    read_view,
    save_eval_view,
    save_filter_view,
    save_training_view,
)

EXP = "supo-tiny"


@pytest.fixture()
def store_uri(tmp_path: Path) -> str:
    (tmp_path / "store").mkdir()
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


def _cfg(arm: str | None = None, **overrides):
    from supo.config import load_config

    return load_config(REPO / "params.yaml", overrides, arm=arm)


def _pipeline_store(uri: str) -> str:
    """A store as the pipeline leaves it for one env: an sft run, training runs (several steps) and evals (one step)
    of grpo-w (S = 0) and supo (S = 2) over two seeds, the warm start at S_eval 0, 1, 2; returns the experiment id."""
    with Tracker(uri, EXP, "array-sft", tags={"stage": "sft", "arm": "sft", "env": "array"}) as sft:
        sft.log_metrics({"loss": 1.0}, step=20)
    for seed in (0, 1):
        for arm, s_own in (("grpo-w", 0), ("supo", 2)):
            with Tracker(uri, EXP, f"array-train-{arm}-seed{seed}", tags={"stage": "train", "env": "array", "arm": arm,
                                                                          "seed": seed}) as tr:
                for step in range(3):
                    tr.log_metrics({"success_rate": 0.1 * step, "mean_reward": 0.1, "clip_frac": 0.0}, step=step)
            for s in (0, 1, 2):
                _eval(uri, arm, seed, s, s == s_own, 0.3 + 0.1 * seed)
        for s in (0, 1, 2):
            _eval(uri, "sft", seed, s, s in (0, 2), 0.2)
    return sft.experiment_id


def _eval(uri: str, arm: str, seed: int, s: int, own: bool, success: float) -> None:
    tags = {"stage": "eval", "env": "array", "arm": arm, "seed": seed, "s_eval": s, "own_setting": str(own).lower()}
    with Tracker(uri, EXP, f"array-eval-{arm}-seed{seed}-s{s}", tags=tags) as ev:
        ev.log_metrics({"success_rate": success, "overlong_rate": 0.1, "mean_summaries": s / 2,
                        "mean_working_context_tokens": 120.0, "summary_state_accuracy": 0.7}, step=0)


# --------------------------------------------------------------------------------------------
# Saved views, read back from the store
# --------------------------------------------------------------------------------------------


def test_the_eval_view_shows_each_arm_and_the_warm_start_at_its_own_setting_in_bars(store_uri: str) -> None:
    exp_id = _pipeline_store(store_uri)
    name, state = read_view(store_uri, exp_id, save_eval_view(store_uri, exp_id, "array"))
    assert name.startswith("supo: array evals at each arm's own setting")
    assert state["searchFilter"] == "tags.env = 'array' and tags.stage = 'eval' and tags.own_setting = 'true'"
    assert state["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "arm"},
                                               {"mode": "tag", "groupByData": "s_eval"}]
    charts = [(c["type"], c["metricKey"]) for c in state["compareRunCharts"]]
    assert charts == [("BAR", m) for m in ("success_rate", "overlong_rate", "mean_summaries",
                                           "mean_working_context_tokens", "summary_state_accuracy")]
    assert state["useGroupedValuesInCharts"] is False  # one bar per seed: the spread over seeds shows
    runs = MlflowClient(tracking_uri=store_uri).search_runs([exp_id], state["searchFilter"])
    assert sorted({(r.data.tags["arm"], r.data.tags["s_eval"]) for r in runs}) == [
        ("grpo-w", "0"), ("sft", "0"), ("sft", "2"), ("supo", "2")]
    assert len(runs) == 8  # two seeds each


def test_the_training_view_charts_lines_and_a_filter_picks_bars_only_for_one_step_runs(store_uri: str) -> None:
    exp_id = _pipeline_store(store_uri)
    name, state = read_view(store_uri, exp_id, save_training_view(store_uri, exp_id, "array", " — supo green"))
    assert name == "supo: array training runs by arm — supo green"
    assert state["searchFilter"] == "tags.env = 'array' and tags.stage = 'train'"
    assert state["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "arm"}]
    assert [(c["type"], c["metricKey"]) for c in state["compareRunCharts"]][:2] == [("LINE", "success_rate"),
                                                                                    ("LINE", "mean_reward")]
    evals = "tags.stage = 'eval' and tags.s_eval = '2'"
    _, state = read_view(store_uri, exp_id, save_filter_view(store_uri, exp_id, evals))
    assert {c["type"] for c in state["compareRunCharts"]} == {"BAR"}
    assert state["compareRunCharts"][0]["metricKey"] == "success_rate"
    _, state = read_view(store_uri, exp_id, save_filter_view(store_uri, exp_id, "tags.stage = 'train'"))
    assert {c["type"] for c in state["compareRunCharts"]} == {"LINE"}
    sections = {s["uuid"] for s in state["compareRunSections"]}
    assert all(c["metricSectionId"] in sections for c in state["compareRunCharts"])


def test_runs_take_the_reports_colour_of_their_arm(store_uri: str) -> None:
    from supo.report.analysis import roles_from_config
    from supo.report.figures import arm_colours

    exp_id = _pipeline_store(store_uri)
    cfg = _cfg()
    palette = arm_palette(cfg)
    expected = arm_colours(roles_from_config(list(cfg.pipeline.arms), cfg.arms), ["supo", "grpo-w", "sft"])
    assert {a: palette[a] for a in expected} == expected
    assert colour_runs(store_uri, exp_id, palette) == 23  # every run has an arm
    assert colour_runs(store_uri, exp_id, palette) == 0  # only changes are written
    runs = MlflowClient(tracking_uri=store_uri).search_runs([exp_id])
    colours = {r.data.tags["arm"]: r.data.tags[RUN_COLOUR_TAG] for r in runs}
    assert colours == {"supo": "#2ca02c", "grpo-w": "#1f77b4", "sft": "#7f7f7f"}


# --------------------------------------------------------------------------------------------
# Own setting, links both ways, a moved project
# --------------------------------------------------------------------------------------------


def test_own_setting_follows_the_arms_training_setting() -> None:
    supo, grpo_w, base = _cfg("supo"), _cfg("grpo-w"), _cfg()
    s = supo.budget.max_summaries
    assert own_setting(supo, "supo", s) and not own_setting(supo, "supo", 0)
    assert own_setting(grpo_w, "grpo-w", 0) and not own_setting(grpo_w, "grpo-w", s)
    assert own_setting(base, "sft", 0) and own_setting(base, "sft", s)  # GRPO-W's and SUPO's settings at W
    assert not own_setting(base, "sft", 1)
    weff = _cfg("grpo-weff")
    weff.eval.working_context = 0
    assert own_setting(weff, "sft-grpo-weff", 0)
    at_w = _cfg("grpo-weff")
    at_w.eval.working_context = base.budget.working_context  # another W than the arm trains at
    assert not own_setting(at_w, "grpo-weff", 0)
    for cfg, label, value in ((supo, "supo", s), (base, "sft", 0), (base, "sft", 1), (weff, "sft-grpo-weff", 0)):
        params = {k: str(v) for k, v in _flat(cfg).items()}
        assert own_setting(config_from_params(params), label, value) == own_setting(cfg, label, value)


def _flat(cfg) -> dict:
    from supo.tracking import flatten_params

    return flatten_params(cfg.flat())


def test_old_evals_get_their_own_setting_tag_from_their_params(store_uri: str) -> None:
    supo = _cfg("supo")
    with Tracker(store_uri, EXP, "old-eval", params=supo.flat(),
                 tags={"stage": "eval", "arm": "supo", "s_eval": supo.budget.max_summaries}) as old:
        pass
    assert tag_own_setting(store_uri, old.experiment_id) == 1
    assert MlflowClient(tracking_uri=store_uri).get_run(old.run_id).data.tags["own_setting"] == "true"
    assert tag_own_setting(store_uri, old.experiment_id) == 0


def test_training_runs_list_their_evals_and_the_report_links_both_ways(store_uri: str) -> None:
    client = MlflowClient(tracking_uri=store_uri)
    with Tracker(store_uri, EXP, "array-sft", tags={"stage": "sft", "env": "array"}):
        pass
    with Tracker(store_uri, EXP, "array-train-supo-seed0", tags={"stage": "train", "env": "array"},
                 description="SUPO, seed 0") as train:
        pass
    assert sft_run_id(store_uri, EXP, "array") not in (None, train.run_id)
    assert sft_run_id(store_uri, EXP, "search") is None
    evals = []
    for s in (0, 2):
        with Tracker(store_uri, EXP, f"array-eval-supo-seed0-s{s}") as ev:
            evals.append(ev.run_id)
        link_eval(store_uri, ev.run_id, train.run_id)
    link_eval(store_uri, evals[-1], train.run_id)  # idempotent
    tags = client.get_run(train.run_id).data.tags
    assert tags["eval_run_ids"] == ",".join(evals)
    exp = train.experiment_id
    assert tags["mlflow.note.content"] == (
        "SUPO, seed 0\n\n**Evaluations:** "
        f"[array-eval-supo-seed0-s0](#/experiments/{exp}/runs/{evals[0]}) · "
        f"[array-eval-supo-seed0-s2](#/experiments/{exp}/runs/{evals[1]})")
    with Tracker(store_uri, EXP, "report", tags={"stage": "report"}) as report:
        pass
    link_report(store_uri, report.run_id, [train.run_id, "0123456789abcdef"], headline="SUPO beat GRPO-W.")
    page = f"#/experiments/{exp}/runs/{report.run_id}/artifacts/report.html"
    assert client.get_run(report.run_id).data.tags["mlflow.note.content"] == (
        f"SUPO beat GRPO-W.\n\nThe full report: [report.html]({page})")
    tags = client.get_run(train.run_id).data.tags
    assert tags["report_run_id"] == report.run_id
    assert tags["mlflow.note.content"].endswith(
        f"\n\n**Report:** [report](#/experiments/{exp}/runs/{report.run_id}) ([report.html]({page}))")
    assert "**Evaluations:**" in tags["mlflow.note.content"]


def test_a_moved_project_reads_its_artifacts_from_next_to_the_store(tmp_path: Path) -> None:
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    with Tracker(f"sqlite:///{old_dir / 'mlflow.db'}", EXP, "r") as tr:
        tr.log_text("hello", "note.txt")
    new_dir = tmp_path / "new"
    old_dir.rename(new_dir)
    uri = f"sqlite:///{new_dir / 'mlflow.db'}"
    assert relocate_artifacts(uri, EXP) == (old_dir / "mlartifacts" / EXP).as_uri()
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(tr.run_id).info.artifact_uri.startswith((new_dir / "mlartifacts" / EXP).as_uri())
    assert Path(client.download_artifacts(tr.run_id, "note.txt", str(tmp_path))).read_text() == "hello"
    assert relocate_artifacts(uri, EXP) is None  # nothing left to repair


def test_experiment_url_carries_the_filter_and_chart_view() -> None:
    url = experiment_url("http://127.0.0.1:5000/", "7", "tags.stage = 'train'", charts=True)
    assert url == ("http://127.0.0.1:5000/#/experiments/7/runs?searchFilter=tags.stage%20%3D%20%27train%27"
                   "&compareRunsMode=CHART")
    assert experiment_url("http://h:1", "3", "ignored", charts=True, view="supo12") == (
        "http://h:1/#/experiments/3/runs?viewStateShareKey=supo12&compareRunsMode=CHART")


def test_ui_with_an_unknown_experiment_names_it_before_starting(tmp_path, monkeypatch, tiny_model_dir) -> None:
    staged = stage_run(tmp_path, monkeypatch, tiny_model_dir)
    result = run_cli("ui", "--experiment", "no-such-exp", "--tracking-uri", f"sqlite:///{staged / 'mlflow.db'}")
    assert_input_error(result, "--experiment no-such-exp: no such experiment")


def test_the_help_example_filter_matches_the_tiny_sweep() -> None:
    result = run_cli("ui", "--help")
    text = " ".join(result.stdout.split())
    assert "tags.s_eval = '5'" in text and "tags.s_eval = '3'" not in text
    assert 5 in _cfg().eval.sweep_values(_cfg().budget.max_summaries)


# --------------------------------------------------------------------------------------------
# The server: ready when it says so, stopped when told — under CPU load, nothing leaked
# --------------------------------------------------------------------------------------------

STOP_WITHIN_S = 5.0
"""How soon every process of `supo-cli ui` must be gone after Ctrl-C or SIGTERM (measured: under 1 s on a loaded 2-core
machine)."""


def _marked(mark: str) -> list[int]:
    """The pids of live processes whose environment carries ``SUPO_TEST_MARK=<mark>`` (children inherit it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"SUPO_TEST_MARK={mark}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":
                        pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.fixture()
def spawn():
    """Start a command in its own session with a fresh mark in its environment; afterwards, whatever happened, kill
    its group and every process still carrying the mark (a failing test never leaks a server)."""
    mark, procs = uuid.uuid4().hex, []

    def start(args: list[str], **kwargs) -> subprocess.Popen:
        env = {**os.environ, "SUPO_TEST_MARK": mark, "SUPO_PROGRESS": "0"}
        env.pop("MLFLOW_TRACKING_URI", None)
        proc = subprocess.Popen(args, env=env, start_new_session=True, **kwargs)
        procs.append(proc)
        return proc

    start.mark = mark
    try:
        yield start
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in _marked(mark):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in procs:
            proc.wait(timeout=30)


@pytest.fixture()
def cpu_load():
    """Two busy processes for the test's duration (on top of whatever else the machine runs); always killed."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) for _ in range(2)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_cli(spawn, store_uri: str, tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """`supo-cli ui --experiment` over a store holding a training run, its stdout piped; (process, port)."""
    with Tracker(store_uri, EXP, "array-train-supo-seed0", tags={"stage": "train", "env": "array", "arm": "supo"}) as tr:
        tr.log_metrics({"success_rate": 0.5}, step=0)
    port = _free_port()
    proc = spawn([sys.executable, "-m", "cli.main", "ui", "--config", str(REPO / "params.yaml"), "--port", str(port),
                  "--tracking-uri", store_uri, "--experiment", EXP], cwd=REPO, stdout=subprocess.PIPE,
                 stderr=(tmp_path / "ui.err").open("w"), text=True)
    proc.err = tmp_path / "ui.err"
    return proc, port


def _read_until(proc: subprocess.Popen, prefix: str, timeout: float = 400.0) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(prefix) or time.monotonic() > deadline:
            break
    err = proc.err.read_text()[-3000:] if hasattr(proc, "err") else ""
    assert lines and lines[-1].startswith(prefix), f"{lines}\n{err}"
    return lines


def _stop_and_time(proc: subprocess.Popen, sig: int, mark: str) -> float:
    """Send ``sig`` to the CLI alone (as a terminal's Ctrl-C or a `kill` would reach it: the server runs in its own
    group) and return the seconds until no process carrying ``mark`` is left."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    while _marked(mark) and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    assert not _marked(mark), f"still running {elapsed:.0f} s after {signal.Signals(sig).name}"
    assert proc.wait(timeout=5) == 128 + sig
    return elapsed


@pytest.mark.slow
def test_ui_prints_its_url_only_once_its_api_answers_and_stops_on_ctrl_c(spawn, cpu_load, store_uri, tmp_path):
    """Against a real store under CPU load: the URL line comes only when the experiment lookup answers; it opens the
    view saved for the env; the server is two processes (one worker, no job runner); Ctrl-C stops them all."""
    proc, port = _start_cli(spawn, store_uri, tmp_path)
    lines = _read_until(proc, "MLflow UI at")
    api = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name={EXP}"
    with urllib.request.urlopen(api, timeout=5) as resp:
        assert resp.status == 200  # answered when the URL was printed
    assert lines[-1].startswith(f"MLflow UI at http://127.0.0.1:{port}/#/experiments/"), lines
    assert "/runs?viewStateShareKey=supo" in lines[-1] and "&compareRunsMode=CHART" in lines[-1]
    assert any("supo: array training runs by arm" in line for line in lines[:-1])
    assert all("http://127.0.0.1" not in line for line in lines[:-1] if not line.startswith("starting"))
    assert len(_marked(spawn.mark)) == 3  # the CLI, `mlflow ui` and one uvicorn worker: no huey workers
    print(f"\n{lines[-1].strip()}\nstopped {_stop_and_time(proc, signal.SIGINT, spawn.mark):.1f} s after Ctrl-C")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("moment", ["spawning", "starting", "answering"])
def test_ui_stops_every_child_at_any_point_of_start_up(spawn, cpu_load, store_uri, tmp_path, sig, moment):
    """The signal comes as the server is being spawned, while it starts (its process exists, it does not answer
    yet), or once it answers: within seconds no process is left."""
    proc, _ = _start_cli(spawn, store_uri, tmp_path)
    _read_until(proc, "starting the MLflow UI" if moment != "answering" else "MLflow UI at")
    if moment == "starting":
        deadline = time.monotonic() + 120
        while len(_marked(spawn.mark)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_marked(spawn.mark)) >= 2, "the server never started"
    elapsed = _stop_and_time(proc, sig, spawn.mark)
    print(f"\n{signal.Signals(sig).name} while {moment}: every process gone after {elapsed:.1f} s")
    assert elapsed < STOP_WITHIN_S


@pytest.mark.slow
def test_start_and_stop_ui_leave_no_process_of_the_group(spawn, store_uri: str) -> None:
    """The library calls: one process group, answering the API, stopped whole."""
    with Tracker(store_uri, "exp-ui", "r"):
        pass
    port = _free_port()
    os.environ["SUPO_TEST_MARK"] = spawn.mark  # the server inherits the mark: the fixture kills it whatever happens
    try:
        proc = start_ui(store_uri, port=port, quiet=True)
    finally:
        del os.environ["SUPO_TEST_MARK"]
    assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)
    try:
        assert wait_for_ui(proc, f"http://127.0.0.1:{port}", timeout=300, experiment="exp-ui")
    finally:
        stop_ui(proc)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)


def test_wait_for_ui_polls_until_the_api_answers(spawn, tmp_path: Path) -> None:
    """A real HTTP server that answers /health at once but the API only after a delay, like `mlflow ui`."""
    port = _free_port()
    server = tmp_path / "server.py"
    server.write_text(
        "import http.server, time\n"
        "T0 = time.monotonic()\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        ok = self.path == '/health' or time.monotonic() - T0 > 1.5\n"
        "        self.send_response(200 if ok else 503); self.end_headers(); self.wfile.write(b'OK')\n"
        "    def log_message(self, *a): pass\n"
        f"http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n")
    proc = spawn([sys.executable, str(server)])
    t0 = time.monotonic()
    assert wait_for_ui(proc, f"http://127.0.0.1:{port}", timeout=60, experiment="x")
    assert time.monotonic() - t0 >= 1.0  # it waited for the API, not only /health
    dead = spawn([sys.executable, "-c", "pass"])
    dead.wait()
    assert not wait_for_ui(dead, f"http://127.0.0.1:{_free_port()}", timeout=30)  # exited: no waiting it out


def test_the_stage_tracker_tags_evals_and_links_them_both_ways(store_uri: str) -> None:
    """`cli.app.tracker` as `supo-cli eval` calls it: ``own_setting`` from the config, the warm start linked to the
    env's sft run, an arm's eval listed on its training run."""
    from cli.app import tracker

    base, supo = _cfg(**{"tracking.uri": store_uri}), _cfg("supo", **{"tracking.uri": store_uri})
    with tracker(base, "sft", None, {"stage": "sft", "arm": "sft"}) as sft:
        pass
    with tracker(supo, "train-supo-seed0", None, {"stage": "train", "arm": "supo"}) as train:
        pass
    s = supo.budget.max_summaries
    with tracker(base, f"eval-sft-seed0-s{s}", None, {"stage": "eval", "arm": "sft", "s_eval": str(s)},
                 description="Eval of `models/sft`") as warm:
        pass
    with tracker(supo, "eval-supo-seed0-s1", None, {"stage": "eval", "arm": "supo", "s_eval": "1"}, train.run_id,
                 description="Eval of `checkpoints/seed0/supo`") as other:
        pass
    client = MlflowClient(tracking_uri=store_uri)
    warm_tags, other_tags = client.get_run(warm.run_id).data.tags, client.get_run(other.run_id).data.tags
    assert warm_tags["own_setting"] == "true" and warm_tags["checkpoint_run_id"] == sft.run_id
    assert "trained in [array-sft]" in warm_tags["mlflow.note.content"]
    assert other_tags["own_setting"] == "false" and other_tags["checkpoint_run_id"] == train.run_id
    assert client.get_run(train.run_id).data.tags["eval_run_ids"] == other.run_id
    assert client.get_run(sft.run_id).data.tags["eval_run_ids"] == warm.run_id
