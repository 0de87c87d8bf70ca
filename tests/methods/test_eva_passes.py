"""EVA's SVD pass ends: peft cycles the initialisation batches until every layer's components stop moving, which with
few tokens per batch can be never; `eva.max_passes` bounds it and the run says which layers it stopped."""

import subprocess
import sys

from tests.conftest import write_jsonl

ROWS = [{"prompt": f"Tell me about item number {i} in the list please",
         "completion": f"Item {i} is a fine thing with many words in its answer, truly many words here"} for i in range(16)]


def test_a_pass_that_never_converges_stops_after_max_passes(tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    # tau 1.0: components must not move at all between two batches, which the randomized SVD never gives (peft 0.21.2
    # ran this for minutes without ending before the bound)
    command = [sys.executable, "-m", "peftlab", "train", "--model", tiny_llama, "--dtype", "fp32", "--data", str(data),
               "--max-steps", "1", "--batch-size", "4", "--output", str(tmp_path / "run"), "--set", "method=eva",
               "--set", "eva.r=4", "--set", "eva.tau=1.0", "--set", "eva.init_rows=8", "--set", "eva.max_passes=2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)  # a bound for a hang
    assert done.returncode == 0, done.stderr[-2000:]
    assert "had not converged after 2 passes and keep the components reached" in done.stdout + done.stderr
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
