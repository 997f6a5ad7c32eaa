"""transfer/components.py: which parts each shipped method switches on, and the order check (a part's needs
must come from an earlier active part), on the real composed configs; nothing is trained here."""
import pytest

from conftest import compose
from transfer.components import COMPONENTS, active

GSA = ["retrieval", "rehearsal", "shift_monitor", "bc_prior", "guidance"]


def names(*overrides):
    return [name for name, _ in active(compose(*overrides).method)]


@pytest.mark.parametrize("overrides, expected", [
    (["method=gsa"], GSA),
    (["method=gsa", "method.guidance=false"], ["retrieval", "rehearsal", "shift_monitor"]),
    (["method=gsa", "method.rehearsal=false"], ["retrieval", "shift_monitor", "bc_prior", "guidance"]),
    (["method=gsa", "method.shift.every=0"], ["retrieval", "rehearsal", "bc_prior", "guidance"]),
    (["method=hybrid"], GSA[:3] + ["distillation", "action_replay", "vae_prior", "guidance"]),
    (["method=hybrid", "method.prior=bc"], GSA[:4] + ["distillation", "action_replay", "guidance"]),
    (["method=hybrid", "method.guidance=false"], GSA[:3] + ["distillation", "action_replay"]),
    (["method=vid2act"], ["distillation", "action_replay"]),
    (["method=vid2act", "method.action_replay.enabled=false"], ["distillation"]),
    (["method=finetune"], []),
    (["method=jsrl"], ["task_data", "bc_prior", "guidance"]),
    (["method=jsrl", "method.guidance=false"], ["task_data"]),
    (["method=dreamer"], []),
    (["method=explore"], ["disagreement"]),
])
def test_shipped_methods_switch_on_their_parts(overrides, expected):
    assert names(*overrides) == expected


def test_each_part_attaches_and_every_need_has_a_provider():
    provided = {a for p in COMPONENTS.values() for a in p.provides}
    for name, part in COMPONENTS.items():
        assert set(part.needs) | set(part.uses) <= provided, name
    # every registered part resolves to a function
    everything = compose("method=hybrid", "method.components=[" + ",".join(COMPONENTS) + "]").method
    assert all(callable(attach) for _, attach in active(everything))


@pytest.mark.parametrize("components, overrides, message", [
    ("[rehearsal,retrieval]", [], "'rehearsal' needs 'retrieved', which no earlier active component provides"),
    ("[retrieval,guidance]", [], r"'guidance' needs 'prior'.*\['bc_prior', 'vae_prior'\]"),
    ("[retrieval,vae_prior,guidance]", ["method.prior=vae"], "'vae_prior' needs 'action_replay'"),
    ("[retrieval,action_replay]", [], r"'action_replay' needs 'distillation'.*\['distillation'\]"),
    ("[retrieval,rehersal]", [], "unknown method component 'rehersal'; known: "),
])
def test_a_wrong_list_fails_with_one_clear_line(components, overrides, message):
    with pytest.raises(ValueError, match=message):
        active(compose("method=gsa", f"method.components={components}", *overrides).method)


def test_gsa_with_the_vae_prior_but_no_action_replay_fails_clearly():
    with pytest.raises(ValueError, match="'guidance' needs 'prior'"):
        active(compose("method=gsa", "method.prior=vae").method)


def test_the_hybrid_without_action_replay_but_a_vae_prior_fails_clearly():
    with pytest.raises(ValueError, match="'vae_prior' needs 'action_replay'.*switched on"):
        active(compose("method=hybrid", "method.action_replay.enabled=false").method)


def probe(ctx):
    """A part that records the Context it is given (test_a_part_gets_a_narrow_context)."""
    probe.ctx = ctx
    probe.stream = ctx.rng("probe", 3)
    ctx.log_once({"probe/attached": 1.0})
    ctx.set_batch_source(probe)


def test_a_part_gets_a_narrow_context_not_the_trainer(tmp_path, monkeypatch):
    from dataclasses import fields

    from core import checkpoint
    from transfer.build import build_trainer
    from transfer.components import Part
    from transfer.context import Context
    monkeypatch.setitem(COMPONENTS, "probe", Part(f"{__name__}:probe"))
    cfg = compose("preset=quick_dmc", "task=cartpole_balance", "method=dreamer", "+method.components=[probe]",
                  "trainer.parallel=false", "logger.wandb=disabled", "logger.progress=false", f"run_dir={tmp_path}")
    trainer = build_trainer(cfg, tmp_path)
    try:
        ctx = probe.ctx
        assert isinstance(ctx, Context) and ctx is not trainer
        public = {a for a in dir(ctx) if not a.startswith("_")}
        assert public == {f.name for f in fields(Context)}  # nothing of the Trainer beyond the context's fields
        assert not hasattr(ctx, "envs") and not hasattr(ctx, "save") and not hasattr(ctx, "cfg")
        assert ctx.agent is trainer.agent and ctx.replay is trainer.replay and ctx.artifacts is trainer.artifacts
        assert ctx.run.seed == cfg.seed and ctx.num_envs == trainer.envs.num_envs and not ctx.resuming
        assert trainer.batch_source is probe and trainer.logger_rows == [{"probe/attached": 1.0}]
        trainer.step = 42
        assert ctx.step() == 42
        assert trainer.rngs["probe"] is probe.stream  # the Trainer saves the part's stream
        probe.stream.random(5)
        trainer.save()
        saved = checkpoint.load(trainer.ckpt_path)["rngs"]["probe"]
        assert saved == probe.stream.bit_generator.state
    finally:
        trainer.close()
