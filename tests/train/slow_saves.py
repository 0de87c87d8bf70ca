"""`python tests/train/slow_saves.py ARGS` runs `peftlab ARGS` with every torch.save slowed down
(SLOW_SAVE_SECONDS, default 0.15 s), so that a test's SIGKILL can land inside a checkpoint save."""

import os
import sys
import time

import torch

_save = torch.save


def _slow_save(*args, **kwargs):
    time.sleep(float(os.environ.get("SLOW_SAVE_SECONDS", "0.15")))
    return _save(*args, **kwargs)


torch.save = _slow_save

if __name__ == "__main__":
    from peftlab.cli import main

    sys.exit(main(sys.argv[1:]))
