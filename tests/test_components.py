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
