"""Fixes to verl itself, on every device (CPU and GPU), loaded into the SFT trainer's ranks through verl's own
plugin mechanism (VERL_USE_EXTERNAL_MODULES, set by `llm_bridge.sft` through `launch.child_env`). Each fix
names the verl behaviour it corrects and the version it was checked against; drop it when verl fixes it.
"""
from __future__ import annotations

import os

VERL_VERSION_CHECKED = "0.9.1"


def _resume_at_epoch_boundary() -> None:
    """verl's SFT trainer saves the StatefulDataLoader's state right after the last batch of an epoch, before the
    iterator has noticed it is finished. Loaded on resume, that state yields nothing more, so verl's epoch loop
    spends the whole next epoch on an empty iterator and the run ends one epoch short (a 5-epoch run of 250
    steps, killed after its checkpoint at step 50, stopped at step 200). A state at the end of its epoch holds
    no position worth keeping: skip it, and the loader starts the epoch verl resumes in (step // steps_per_epoch)
    from its first batch, with that epoch's shuffle, as an uninterrupted run would."""
    import torch
    from verl.utils.checkpoint import checkpoint_handler

    original = checkpoint_handler.CheckpointHandler._load_dataloader_state

    def load_dataloader_state(self, checkpoint_path: str):
        path = os.path.join(checkpoint_path, f"data_{self.dp_rank}.pt")
        if os.path.exists(path):
            state = torch.load(path, map_location="cpu", weights_only=False)
            if state.get("_num_yielded", 0) >= len(self.train_dataloader):
                print(f"[llm-bridge] {path}: the data loader had finished its epoch; the next epoch starts from its "
                      "first batch (verl 0.9.1 would skip it)", flush=True)
                return
        original(self, checkpoint_path)

    checkpoint_handler.CheckpointHandler._load_dataloader_state = load_dataloader_state


_resume_at_epoch_boundary()
