"""Trains the tiny mindformers Llama of docs/mindformers.md through mindformers' Trainer (graph mode, CPU), once per
job, in one process, and writes what happened to a JSON file for tests/test_mindformers.py:

    python _mindformers_worker.py JOBS.json RESULTS.json

Each job runs in its own directory and records the losses of every step, or the error. The CPU work-arounds of
docs/mindformers.md belong here, not in ms_optim. Run in a subprocess because mindformers' Trainer changes
process-wide MindSpore state (context, parallel context, seed) that other test files must not see.

`python _mindformers_worker.py --steptime` measures the step time of a larger Llama with ms_optim.Came and with
mindformers' AdamW (the figure in docs/mindformers.md).
"""
import json
import os
import re
import sys
import time
import traceback
from pathlib import Path

import numpy as np

DOC = Path(__file__).resolve().parent.parent / "docs" / "mindformers.md"
LOSSES = []  # loss of each step of the current job, appended by the patched MFLossMonitor
STEP_TIMES = []


def doc_blocks(language):
    """The fenced code blocks of docs/mindformers.md in `language`, in order."""
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def example_config():
    """The example config of the docs (the yaml block that defines a model)."""
    return next(block for block in doc_blocks("yaml") if block.startswith("# llama_tiny_ms_optim.yaml"))


def optimizer_sections():
    """{type: yaml text} of the docs' per-class optimizer sections (blocks that are only an `optimizer:` mapping
    whose type is an ms_optim name)."""
    sections = {}
    for block in doc_blocks("yaml"):
        match = re.match(r"optimizer:[^\n]*\n  type: (ms_optim\.\w+)\n", block)
        if match and "auto_register" not in block:
            sections[match.group(1)] = block
    return sections


def with_optimizer(config_text, section):
    """The example config with its optimizer section replaced by `section`."""
    new, count = re.subn(r"^optimizer:\n(?:  .*\n)+", lambda _: section, config_text, flags=re.M)
    assert count == 1, "the example config must have exactly one optimizer section"
    return new


def launcher_code():
    """The docs' launcher (the python block that calls msf.register() and trains)."""
    return next(block for block in doc_blocks("python") if "msf.register()" in block and ".train()" in block)


def cpu_workarounds():
    """What mindformers 1.8 needs to train on CPU, plus a loss recorder (docs/mindformers.md, last section)."""
    import mindspore as ms
    from mindspore import ops
    from mindformers.core.callback.callback import MFLossMonitor
    from mindformers.wrapper.wrapper import MFTrainOneStepCell

    def finite_overflow(self, status, compute_output):  # NPUGetFloatStatusV2 / FloatStatus: no CPU kernel
        total = ops.zeros((), ms.float32)
        for grad in compute_output:
            total = total + ops.abs(grad).sum()
        return ops.logical_not(ops.isfinite(total))

    MFTrainOneStepCell.get_overflow_status = finite_overflow
    step_end = MFLossMonitor.on_train_step_end

    def record(self, run_context):
        outputs = run_context.original_args().net_outputs
        LOSSES.append(float((outputs[0] if isinstance(outputs, (tuple, list)) else outputs).asnumpy()))
        STEP_TIMES.append(time.perf_counter())
        return step_end(self, run_context)

    MFLossMonitor.on_train_step_end = record


def use_non_fused_mindformers_came():
    """mindformers' Came takes FusedAdaFactor on CPU, which fails in 2.7.2; its non-fused path runs."""
    from mindformers.core.optim.came import Came
    init = Came.__init__

    def non_fused_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.use_fused_ada_factor = False

    Came.__init__ = non_fused_init


def dataset(samples, seq_length=32):
    import mindspore.dataset as ds
    tokens = (np.arange(seq_length + 1) % 8 + 3).astype(np.int32)
    return ds.GeneratorDataset(lambda: ((tokens,) for _ in range(samples)), ["input_ids"], shuffle=False).batch(2)


def run_launcher(job):
    """The docs' launcher, run as written, on the example config with the job's optimizer section."""
    Path("llama_tiny_ms_optim.yaml").write_text(with_optimizer(example_config(), job["section"]), encoding="utf-8")
    exec(compile(launcher_code(), str(DOC), "exec"), {"__name__": "__docs_launcher__"})  # pylint: disable=exec-used
    return {}


def run_register_path(job):
    """The run_mindformer.py --register_path route: what that script does with the option, then the Trainer."""
    from mindformers import MindFormerConfig, Trainer, build_context
    from mindformers.tools.register import MindFormerRegister
    import ms_optim.integrations.mindformers as msf
    registered_before = MindFormerRegister.is_exist("optimizer", "ms_optim.Came")
    os.environ["REGISTER_PATH"] = msf.REGISTER_PATH  # run_mindformer.py: --register_path sets these two
    sys.path.append(msf.REGISTER_PATH)
    Path("config.yaml").write_text(with_optimizer(example_config(), job["section"]), encoding="utf-8")
    config = MindFormerConfig("config.yaml")
    build_context(config)
    trainer = Trainer(args=config, train_dataset=dataset(job["samples"]))
    trainer.train()
    optimizer = trainer.trainer.optimizer
    return {"registered_before": registered_before, "optimizer_mro": [c.__module__ + "." + c.__name__
                                                                        for c in type(optimizer).__mro__[:2]],
            "came_class": MindFormerRegister.get_cls("optimizer", "Came").__module__,
            "also_registered": MindFormerRegister.is_exist("optimizer", "ms_optim.Adam")}


def run_config(job):
    """A Trainer on the example config with `job['options']` set (checkpoint save / resume)."""
    from mindformers import MindFormerConfig, Trainer, build_context
    import ms_optim.integrations.mindformers as msf
    msf.register()
    Path("config.yaml").write_text(with_optimizer(example_config(), job["section"]), encoding="utf-8")
    config = MindFormerConfig("config.yaml")
    for key, value in job.get("options", {}).items():
        config[key] = value
    config.callbacks.extend(job.get("callbacks", []))
    build_context(config)
    trainer = Trainer(args=config, train_dataset=dataset(job["samples"]))
    trainer.train()
    optimizer = trainer.trainer.optimizer
    result = {"optimizer": type(optimizer).__module__ + "." + type(optimizer).__name__}
    if hasattr(optimizer, "step"):  # both Came classes: afactor_step
        result["afactor_step"] = float(optimizer.step.asnumpy().reshape(-1)[0])
    return result


RUNNERS = {"launcher": run_launcher, "register_path": run_register_path, "config": run_config}


def main(jobs_path, results_path):
    jobs = json.loads(Path(jobs_path).read_text(encoding="utf-8"))
    root = Path(results_path).parent
    cpu_workarounds()
    use_non_fused_mindformers_came()
    results = {}
    for job in jobs:
        LOSSES.clear()
        workdir = root / job["name"]
        workdir.mkdir(parents=True, exist_ok=True)
        os.chdir(workdir)
        start = time.perf_counter()
        try:
            result = RUNNERS[job["runner"]](job)
            result["error"] = None
        except Exception:  # pylint: disable=broad-except  # recorded for the test to report
            result = {"error": traceback.format_exc()[-4000:]}
        result["losses"] = list(LOSSES)
        result["seconds"] = round(time.perf_counter() - start, 1)
        results[job["name"]] = result
        Path(results_path).write_text(json.dumps(results, indent=1), encoding="utf-8")
        print(f"{job['name']}: {result['seconds']} s, losses {np.round(LOSSES, 3).tolist()}, "
              f"error {result['error']}", flush=True)


def steptime(steps=60):
    """Median step time of a Llama (4 layers, hidden 512, seq 256, vocab 4096: 17M parameters) with ms_optim.Came
    and with mindformers' AdamW, two runs of each, alternating; steps after the first 5 (about 15 min on 2 cores)."""
    from mindformers import MindFormerConfig, Trainer, build_context
    import ms_optim.integrations.mindformers as msf
    msf.register()
    cpu_workarounds()
    size = {"seq_length": 256, "hidden_size": 512, "num_layers": 4, "num_heads": 8, "vocab_size": 4096,
            "intermediate_size": 1408}
    sections = {"ms_optim.Came": "optimizer:\n  type: ms_optim.Came\n  weight_decay: 0.1\n",
                "AdamW": "optimizer:\n  type: AdamW\n  betas: [0.9, 0.95]\n  eps: 1.e-8\n  weight_decay: 0.1\n"}
    medians = {name: [] for name in sections}
    root = Path(os.environ.get("TMPDIR", "/tmp")) / "ms_optim_mf_steptime"
    for repeat in range(2):
        for name, section in sections.items():
            workdir = root / f"{name}_{repeat}"
            workdir.mkdir(parents=True, exist_ok=True)
            os.chdir(workdir)
            text = with_optimizer(example_config(), section)
            for key, value in size.items():
                text = re.sub(rf"^    {key}: .*$", f"    {key}: {value}", text, flags=re.M)
            Path("config.yaml").write_text(text, encoding="utf-8")
            config = MindFormerConfig("config.yaml")
            build_context(config)
            LOSSES.clear()
            STEP_TIMES.clear()
            Trainer(args=config, train_dataset=dataset(2 * steps, size["seq_length"])).train()
            median = float(np.median(np.diff(STEP_TIMES[5:]))) * 1e3
            medians[name].append(median)
            print(f"{name} run {repeat}: median step {median:.1f} ms, loss {LOSSES[0]:.3f} -> {LOSSES[-1]:.3f}",
                  flush=True)
    came, adamw = np.median(medians["ms_optim.Came"]), np.median(medians["AdamW"])
    print(f"ms_optim.Came {came:.1f} ms, AdamW {adamw:.1f} ms a step: ratio {came / adamw:.3f}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--steptime"]:
        steptime()
    else:
        main(*sys.argv[1:3])
