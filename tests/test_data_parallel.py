"""Data parallel training with msrun (2 CPU workers): every worker ends with the same parameters and optimizer
state, equal to one process training on the whole batch."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

import mindspore as ms

import _data_parallel_worker as worker

WORKERS = 2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_data_parallel_matches_single_process(tmp_path):
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")  # workers run `python`
    cmd = [str(bin_dir / "msrun"), f"--worker_num={WORKERS}", f"--local_worker_num={WORKERS}",
           f"--master_port={_free_port()}", "--join=True", f"--log_dir={tmp_path / 'log'}",
           worker.__file__, str(tmp_path / "state")]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    logs = "".join(p.read_text(errors="replace")[-3000:] for p in sorted((tmp_path / "log").glob("*.log")))
    assert done.returncode == 0, f"msrun exited with {done.returncode}\n{done.stderr[-3000:]}\n{logs}"

    ms.set_context(mode=ms.GRAPH_MODE)
    x, y = worker.batch()
    for name in worker.OPTIMIZERS:
        ranks = [dict(np.load(tmp_path / f"state_{name}_{rank}.npz")) for rank in range(WORKERS)]
        single = worker.train(name, x, y)
        assert sorted(ranks[0]) == sorted(single)
        for key, want in single.items():
            for rank in range(1, WORKERS):
                np.testing.assert_array_equal(ranks[rank][key], ranks[0][key], err_msg=f"{name} {key} rank {rank}")
            # Only the order of the gradient sums differs from one process.
            np.testing.assert_allclose(ranks[0][key], want, rtol=1e-5, atol=1e-6, err_msg=f"{name} {key}")
        assert ranks[0]["global_step"][0] == worker.STEPS, f"{name}: {ranks[0]['global_step']} steps"
