"""Atomic checkpoints: a kill during a write never leaves a checkpoint that loads half."""


def test_a_half_written_checkpoint_is_never_loaded(tmp_path):
    """Simulate a kill during the write: a .tmp- folder and no pointer update leave the previous checkpoint latest."""
    from supo.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    from supo.models import build_model, build_tokenizer
    from supo.config import ModelConfig

    tok = build_tokenizer(["Get 1 2 3", "hello world"] * 20, 300, tmp_path / "tok")
    model = build_model(tok, ModelConfig(hidden_size=64, num_heads=1, num_kv_heads=1, num_layers=1,
                                         intermediate_size=64, max_position_embeddings=64), 0)
    out = tmp_path / "steps"
    save_checkpoint(out, step=1, model=model, tokenizer=tok, trainer_state={"updates": 1}, history=[{"step": 0}],
                    mlflow_run_id="abc")
    # a second save killed half way: only a temp folder exists
    (out / ".tmp-step_000002").mkdir()
    (out / ".tmp-step_000002" / "config.json").write_text("{")
    assert latest_checkpoint(out).name == "step_000001"
    st = load_checkpoint(latest_checkpoint(out))
    assert st.step == 1 and st.trainer_state == {"updates": 1} and st.mlflow_run_id == "abc"
    save_checkpoint(out, step=2, model=model, tokenizer=tok, trainer_state={"updates": 2}, history=[], mlflow_run_id=None)
    assert latest_checkpoint(out).name == "step_000002" and not list(out.glob(".tmp-*"))
