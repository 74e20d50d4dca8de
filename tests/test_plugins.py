"""supo.plugins: ``train.plugins`` modules register variants in every process that reads a registry — the driver when
the config loads, and the trainer ranks of a real 2-rank group (Ray actors, separate processes) from the refs the
driver hands them, even when the module is in a folder the actors' ``sys.path`` lacks."""

from __future__ import annotations

import random
import sys
import uuid

import pytest
import torch

from supo.config import ConfigError, TrainConfig, load_config
from supo.plugins import LOADED, PluginRef, import_plugins, load_plugins

PLUGIN = '''
from supo.algo.loss import clip_higher, register_policy_loss


@register_policy_loss("{loss}")
def tripled(logprobs, old_logprobs, advantages, clip_low=0.2, clip_high=0.28):
    loss, clipped = clip_higher(logprobs, old_logprobs, advantages, clip_low=clip_low, clip_high=clip_high)
    return 3.0 * loss, clipped
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A plugin module in a folder of its own (not on sys.path; the working directory, as a project's would be):
    its module name and the policy loss it registers; both unregistered afterwards."""
    from supo.algo.loss import POLICY_LOSSES

    name, loss = f"supo_plugin_{uuid.uuid4().hex[:8]}", f"tripled-{uuid.uuid4().hex[:6]}"
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / f"{name}.py").write_text(PLUGIN.format(loss=loss))
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield name, loss, folder
    POLICY_LOSSES.pop(loss, None)
    sys.modules.pop(name, None)
    if name in LOADED:
        LOADED.remove(name)


def test_a_plugin_registers_its_loss_when_the_config_loads(plugin):
    name, loss, folder = plugin
    cfg = load_config(None, {"train.plugins": [name], "train.policy_loss": loss})
    assert cfg.train.policy_loss == loss and name in LOADED
    assert import_plugins([name]) == [PluginRef(name, str(folder))]


def test_a_loss_no_plugin_registers_is_named():
    with pytest.raises(ConfigError, match="train.policy_loss"):
        load_config(None, {"train.policy_loss": "not-registered"})


@pytest.mark.parametrize(("plugins", "needle"), [
    (["no_such_module_xyz"], "train.plugins: no module no_such_module_xyz"),
    (["not a module"], "train.plugins: 'not a module' is not a module name"),
    ([3], "train.plugins"),
])
def test_bad_plugins_are_named(plugins, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, {"train.plugins": plugins})


def test_a_plugin_that_fails_to_import_is_named_with_its_error(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin_q.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(ConfigError, match="train.plugins: importing broken_plugin_q failed: RuntimeError: boom"):
        import_plugins(["broken_plugin_q"])


@pytest.mark.slow
def test_every_rank_of_a_real_two_rank_group_imports_the_plugin(plugin, tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from supo.distributed import init_ray
    from supo.distributed.trainer_group import TrainerGroup
    from supo.models import load_policy
    from supo.trainer.policy_trainer import PolicyTrainer
    from supo.types import TrainingSample

    name, loss, folder = plugin
    refs = import_plugins([name])
    model_dir = tmp_path / "model"
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                                 num_attention_heads=1, num_key_value_heads=1, head_dim=64,
                                 max_position_embeddings=128, tie_word_embeddings=True, pad_token_id=0)
                     ).float().save_pretrained(str(model_dir))
    rng = random.Random(0)
    samples = []
    for i in range(6):
        R = rng.randint(3, 8)
        adv = rng.uniform(-2, 2)
        samples.append(TrainingSample([rng.randint(1, 63) for _ in range(4)], [rng.randint(1, 63) for _ in range(R)],
                                      [1] * R, [-rng.uniform(3.5, 5.0)] * R, [adv] * R, rollout=i))
    cfg = TrainConfig(policy_loss=loss, mini_batches=1, micro_batch_size=2, lr=1e-4, log_kl_to_init=False,
                      plugins=[name])
    plain = PolicyTrainer(load_policy(model_dir), cfg, 0, 64, 0).update(samples)
    default = PolicyTrainer(load_policy(model_dir), TrainConfig(mini_batches=1, micro_batch_size=2, lr=1e-4,
                                                                log_kl_to_init=False), 0, 64, 0).update(samples)
    init_ray(num_cpus=4)
    group = TrainerGroup(2, str(model_dir), cfg, 0, 64, 0, threads_per_rank=1, plugins=refs)
    try:
        info = group.info
        stats = group.update(samples)
        group.reset(load_policy(model_dir).state_dict(), cfg, 64, 0, 0, plugins=refs)  # a new run: still there
        again = group.update(samples)
    finally:
        group.shutdown()
    assert [i["rank"] for i in info] == [0, 1] and len({i["pid"] for i in info}) == 2
    assert all(name in i["plugins"] and loss in i["policy_losses"] for i in info)
    assert stats.loss == pytest.approx(plain.loss, rel=1e-5) and again.loss == pytest.approx(stats.loss, rel=1e-6)
    assert stats.loss == pytest.approx(3 * default.loss, rel=1e-5)  # the plugin's loss, not the default one


@pytest.mark.slow
def test_load_plugins_in_another_process_needs_the_refs(plugin):
    """A Ray task (another process, without the project folder on its path) imports the plugin from its ref."""
    import ray

    from supo.distributed import init_ray

    name, loss, folder = plugin
    refs = import_plugins([name])
    init_ray(num_cpus=2)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the task below is defined in this test file

    @ray.remote
    def registered(refs):
        import importlib

        from supo.algo.loss import POLICY_LOSSES

        try:
            importlib.import_module(refs[0][0])
            plain = "imported"
        except ModuleNotFoundError:
            plain = "missing"
        load_plugins(refs)
        return plain, loss in POLICY_LOSSES

    assert ray.get(registered.remote([tuple(r) for r in refs])) == ("missing", True)
