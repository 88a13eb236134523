"""mindformers 1.8 integration (docs/mindformers.md): registration, build_optim from each class's YAML section with the
trainer's parameter groups and schedules, and a tiny Llama trained through mindformers' Trainer with each class."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

try:
    import mindformers  # noqa: F401  pylint: disable=unused-import
    from mindformers.core.lr import build_lr
    from mindformers.core.optim import build_optim
    from mindformers.tools.register import MindFormerConfig, MindFormerModuleType, MindFormerRegister
    from mindformers.trainer.optimizer_grouped_parameters import get_optimizer_grouped_parameters
except ImportError as error:  # the version-floor environment of .ci/run installs it
    pytest.skip(f"mindformers is not importable ({error}); pip install mindformers==1.8.0 (pins mindspore 2.7.2) "
                f"to run the mindformers integration tests", allow_module_level=True)

import yaml  # a mindformers dependency
from mindspore import Tensor, nn, ops

import ms_optim
import ms_optim.integrations.mindformers as msf
import _mindformers_worker as worker

OPTIMIZER = MindFormerModuleType.OPTIMIZER
# Subprocesses import the ms_optim this process imported (a source tree on PYTHONPATH, or the installed package).
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(ms_optim.__file__).resolve().parent.parent),
                                                   os.environ.get("PYTHONPATH", "")]))
CLASSES = msf.optimizer_classes()
SECTIONS = worker.optimizer_sections()


def _registry_snapshot():
    return (dict(MindFormerRegister.registry.get(OPTIMIZER, {})),
            {k: v for k, v in MindFormerRegister.search_names_map.items() if k[0] == OPTIMIZER})


def test_every_public_optimizer_is_registered_under_two_names_and_nothing_else():
    before, before_names = _registry_snapshot()
    names = msf.register()
    after, after_names = _registry_snapshot()
    assert set(CLASSES) >= {"Adam", "Came"} and set(CLASSES) <= set(ms_optim.__all__)
    for name, cls in CLASSES.items():
        assert MindFormerRegister.get_cls(OPTIMIZER, f"ms_optim.{name}") is cls
        assert MindFormerRegister.get_cls(OPTIMIZER, f"MsOptim{name}") is cls
        assert names[f"ms_optim.{name}"] is names[f"MsOptim{name}"] is cls
    # Only the MsOptim<Name> keys are new, and only the two names map to them; nothing that existed changed.
    added = set(after) - set(before)
    assert added <= {f"MsOptim{name}" for name in CLASSES}
    for key, cls in before.items():
        if key not in names:  # a second register() (other tests) re-sets our own keys to the same classes
            assert after[key] is cls, f"{key} was replaced by {after[key]}"
    for key, target in after_names.items():
        if key not in before_names:
            assert key[1] in names and target.startswith("MsOptim"), key
        else:
            assert target == before_names[key], key


def test_register_never_shadows_mindformers_or_mindspore_classes():
    from mindformers.core.optim.came import Came as MindformersCame
    msf.register()
    msf.register()  # idempotent
    assert MindFormerRegister.get_cls(OPTIMIZER, "Came") is MindformersCame
    assert MindFormerRegister.get_cls(OPTIMIZER, "Adam") is nn.Adam
    assert MindFormerRegister.get_cls(OPTIMIZER, "adam") is nn.Adam
    assert MindFormerRegister.get_cls(OPTIMIZER, "Adagrad") is nn.Adagrad
    for name in CLASSES:  # a bare name resolves to mindformers' or MindSpore's class of that name, or to nothing
        if MindFormerRegister.is_exist(OPTIMIZER, name):
            assert not MindFormerRegister.get_cls(OPTIMIZER, name).__module__.startswith("ms_optim"), name


def test_register_without_mindformers_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['mindformers'] = None\n"
            "import ms_optim, ms_optim.integrations.mindformers as msf\n"
            "assert 'mindformers.tools' not in sys.modules\n"
            "try:\n    msf.register()\nexcept ImportError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=ENV,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pip install mindformers" in done.stdout, done.stdout


def test_import_ms_optim_does_not_import_mindformers(tmp_path):
    code = "import sys, ms_optim, ms_optim.integrations.mindformers; print('mindformers' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=ENV,
                          cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stdout + done.stderr[-2000:]


def test_docs_have_an_optimizer_section_for_every_class():
    missing = [name for name in CLASSES if f"ms_optim.{name}" not in SECTIONS]
    assert not missing, f"add an optimizer section for {missing} to docs/mindformers.md"


class _Net(nn.Cell):
    def __init__(self):
        super().__init__()
        self.embed = nn.Dense(6, 8)
        self.head = nn.Dense(8, 3)

    def construct(self, x):
        return self.head(ops.tanh(self.embed(x)))


def _lr(value):
    return build_lr(MindFormerConfig(type="CosineWithWarmUpLR", learning_rate=value, warmup_ratio=0.0,
                                     lr_end=value / 10, total_steps=20, warmup_steps=0))


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_build_optim_from_yaml_section_with_trainer_groups_and_schedules(name, mode):
    """What base_trainer.create_optimizer_scheduler passes: its parameter groups (weight decay on 2-D weights only,
    and a group 'lr' schedule from grouped_lr_schedule) and a mindformers LearningRateSchedule."""
    msf.register()
    net = _Net()
    section = MindFormerConfig(**yaml.safe_load(SECTIONS[f"ms_optim.{name}"]))
    groups = get_optimizer_grouped_parameters(
        model=net, weight_decay=section.optimizer.weight_decay, dynamic_lr_schedule=_lr(1e-2),
        grouped_lr_schedule=[{"params": ["head.*"], "lr_scheduler": _lr(5e-3), "lr_config": {}}])
    assert any("lr" in g for g in groups) and any("lr" not in g for g in groups)
    assert sorted({g["weight_decay"] for g in groups}) == [0.0, section.optimizer.weight_decay]
    optimizer = build_optim(section.optimizer, default_args={"params": groups, "learning_rate": _lr(1e-2)})
    assert isinstance(optimizer, CLASSES[name]) and optimizer.is_group_lr
    before = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    x = Tensor(np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32))
    y = Tensor(np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32))
    train = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), optimizer)
    losses = [float(train(x, y).asnumpy()) for _ in range(3)]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    for p in net.trainable_params():
        assert np.isfinite(p.asnumpy()).all() and not np.array_equal(p.asnumpy(), before[p.name]), p.name


def test_build_optim_refusals_name_the_class_and_the_argument():
    msf.register()
    params = _Net().trainable_params()
    with pytest.raises(TypeError, match=r"Came.*beta2"):  # Came has beta1, beta3 and decay_rate, no beta2
        build_optim({"type": "ms_optim.Came", "beta2": 0.95}, default_args={"params": params, "learning_rate": 0.1})
    with pytest.raises(TypeError, match=r"'eps' must be float.*1e-8"):  # PyYAML reads 1e-8 as a str
        build_optim({"type": "MsOptimAdam", "eps": "1e-8"}, default_args={"params": params})
    with pytest.raises(TypeError, match=r"'weight_decay' must be float"):  # weight_decay: 0 is an int
        build_optim({"type": "ms_optim.Came", "weight_decay": 0}, default_args={"params": params,
                                                                                "learning_rate": 0.1})
    with pytest.raises(TypeError, match=r"'beta1' and its alias 'betas'"):
        build_optim({"type": "ms_optim.Adam", "betas": [0.9, 0.95], "beta1": 0.8}, default_args={"params": params})


def test_build_optim_takes_beta1_beta2_and_betas_lists():
    msf.register()
    params = _Net().trainable_params()
    adam = build_optim({"type": "ms_optim.Adam", "beta1": 0.8, "beta2": 0.95}, default_args={"params": params})
    listed = build_optim({"type": "ms_optim.Adam", "betas": [0.8, 0.95]}, default_args={"params": params})
    for optimizer in (adam, listed):
        assert np.isclose(float(optimizer.beta1.asnumpy()), 0.8) and np.isclose(float(optimizer.beta2.asnumpy()), 0.95)


# ------------------------------------------------------------------------------------------------------------------
# Training through mindformers' Trainer: one worker process for every run (see _mindformers_worker.py).

CAME_SAVE = "optimizer:\n  type: Came\n  weight_decay: 0.1\n"  # mindformers' own Came
CAME_BETA1_0 = "optimizer:\n  type: ms_optim.Came\n  beta1: 0.0\n  weight_decay: 0.1\n"
CKPT = "checkpoint/rank_0/llama_rank_0-1_6.ckpt"


def _jobs(tmp):
    jobs = [  # the --register_path route first: nothing of ms_optim is registered before it
        {"name": "register_path", "runner": "register_path", "samples": 24,
         "section": "optimizer:\n  auto_register: ms_optim_mindformers.MsOptimCame\n  type: ms_optim.Came\n"
                    "  weight_decay: 0.1\n"}]
    jobs += [{"name": f"launcher_{name}", "runner": "launcher", "section": SECTIONS[f"ms_optim.{name}"]}
             for name in sorted(CLASSES)]
    jobs += [
        {"name": "mindformers_came", "runner": "config", "samples": 20, "section": CAME_SAVE,
         "callbacks": [{"type": "CheckpointMonitor", "prefix": "llama", "save_checkpoint_steps": 6,
                        "keep_checkpoint_max": 2, "integrated_save": False, "async_save": False}]},
        {"name": "resume_with_ms_optim_came", "runner": "config", "samples": 20,
         "section": "optimizer:\n  type: ms_optim.Came\n  weight_decay: 0.1\n",
         "options": {"load_checkpoint": str(tmp / "mindformers_came" / "output" / CKPT), "resume_training": True}},
        {"name": "came_beta1_0", "runner": "config", "samples": 24, "section": CAME_BETA1_0},
    ]
    return jobs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mindformers")
    (tmp / "jobs.json").write_text(json.dumps(_jobs(tmp)), encoding="utf-8")
    env = dict(ENV, OM_MODULES_CACHE=str(tmp / "om_modules"))
    done = subprocess.run([sys.executable, worker.__file__, str(tmp / "jobs.json"), str(tmp / "results.json")],
                          capture_output=True, text=True, cwd=tmp, env=env, timeout=900)
    results_file = tmp / "results.json"
    results = json.loads(results_file.read_text(encoding="utf-8")) if results_file.exists() else {}
    return done, results


def _result(trained, name):
    done, results = trained
    assert name in results, f"worker exited with {done.returncode} before {name}:\n{done.stdout[-3000:]}\n" \
                            f"{done.stderr[-5000:]}"
    result = results[name]
    assert result["error"] is None, f"{name} failed:\n{result['error']}"
    return result


def _assert_learns(losses, steps):
    assert len(losses) == steps and np.all(np.isfinite(losses)), losses
    assert np.mean(losses[-3:]) < 0.5 * losses[0], f"the loss did not fall: {np.round(losses, 3).tolist()}"


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_trainer_learns_with_each_class_through_the_docs_launcher(trained, name):
    _assert_learns(_result(trained, f"launcher_{name}")["losses"], 24)


def test_trainer_with_register_path_and_auto_register(trained):
    result = _result(trained, "register_path")
    assert result["registered_before"] is False
    assert result["optimizer_mro"][1] == "ms_optim.came.Came" and result["optimizer_mro"][0].endswith(".MsOptimCame")
    assert result["came_class"] == "mindformers.core.optim.came" and result["also_registered"]
    _assert_learns(result["losses"], 12)


def test_mindformers_came_checkpoint_resumes_with_ms_optim_came(trained):
    """A run with mindformers' Came saves at step 6 of 10; the run resumed from it with ms_optim.Came loads every
    optimizer state and follows the uninterrupted mindformers run (a restarted state would not: step 1 again)."""
    original = _result(trained, "mindformers_came")
    resumed = _result(trained, "resume_with_ms_optim_came")
    assert original["optimizer"] == "mindformers.core.optim.came.Came" and len(original["losses"]) == 10
    assert resumed["optimizer"] == "ms_optim.came.Came" and resumed["afactor_step"] == 10.0
    assert len(resumed["losses"]) == 4, resumed["losses"]  # steps 7..10: the data of steps 1..6 is skipped
    np.testing.assert_allclose(resumed["losses"], original["losses"][6:], rtol=0.02)


def test_came_beta1_zero_trains_from_yaml(trained):
    """beta1=0.0 (no first moment, so no confidence term: docs/came.md) trains from a YAML config."""
    _assert_learns(_result(trained, "came_beta1_0")["losses"], 12)
