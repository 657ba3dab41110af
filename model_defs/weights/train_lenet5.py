"""Train ``lenet5`` on the training digits and write its shipped checkpoint, ``lenet5.safetensors``.

    .venv/bin/python model_defs/weights/train_lenet5.py [--out PATH]

The training split of ``calibration.digits`` (1,297 of scikit-learn's 8x8 digits, upsampled to
32x32) goes through the spec's own preprocessing (:func:`calibration.preprocess_batch`), the code
validation and INT8 calibration use, so the checkpoint sees the tensors it is measured on. Adam
(lr 2e-3, batches of 32, 10 epochs), cross-entropy, seeded initialisation and shuffling, one thread:
the same machine writes the same bytes every run (another CPU's kernels may round differently).
About 12 s of CPU time, imports included.

The shipped file (sha256 ea9d3f6f73e8...): held-out accuracy 99.00 %, 396 of the 400 held-out digits
(never trained nor calibrated on); train accuracy 100 %.

It lives beside the checkpoint it writes, not in ``benchmarks/``: it measures nothing, it is the
recipe of a file that ``model_defs`` ships (package data, see ``model_defs.lenet.lenet5_checkpoint``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from calibration import preprocess_batch  # noqa: E402
from calibration.digits import digit_images, digit_labels, digit_names  # noqa: E402
from model_defs import create_model, get_spec  # noqa: E402
from model_defs.lenet import lenet5_checkpoint  # noqa: E402

EPOCHS = 10
BATCH = 32
LEARNING_RATE = 2e-3
SEED = 0


def digits_tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of the digits, preprocessed for lenet5, and their labels."""
    names = digit_names(split)
    batch = preprocess_batch(digit_images(names), get_spec("lenet5"))
    return torch.from_numpy(batch), torch.from_numpy(digit_labels(names))


def train(epochs: int = EPOCHS, seed: int = SEED) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model("lenet5").train()
    images, labels = digits_tensors("train")
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(images), generator=order).split(BATCH):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimizer.step()
    return model.eval()


def accuracy(model: nn.Module, split: str) -> float:
    images, labels = digits_tensors(split)
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=lenet5_checkpoint())
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    started = time.perf_counter()
    model = train(args.epochs)
    held_out = accuracy(model, "held_out")
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    # One metadata entry: safetensors writes several in a random order, and the same run must give the same bytes.
    save_file(state, str(args.out), metadata={"made_by": f"model_defs/weights/train_lenet5.py, {args.epochs} epochs: "
                                                         f"held-out accuracy {held_out:.4f}"})
    print(f"{args.out}: train accuracy {accuracy(model, 'train'):.2%}, held-out {held_out:.2%} "
          f"({len(digit_names('held_out'))} digits), {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
