"""How far one set of logits drifts from a reference set: the numbers every stage reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# A reference top-1 is "confident" when its softmax probability leads the runner-up's by at least
# this much. Below it, the first two classes are a near-tie that an in-budget precision may swap:
# real EfficientNet-Lite1 INT8 at cosine 0.996 flipped a held-out photo whose gap was 0.053.
CONFIDENT_MARGIN = 0.1


@dataclass(frozen=True)
class Drift:
    """Drift of ``candidate`` logits from ``reference`` logits over a batch of N samples."""

    samples: int
    max_abs: float
    mean_abs: float
    rel_max_abs: float  # max_abs / max |reference|: the error on the logit scale
    rel_l2: float  # ||c - r|| / ||r|| over the whole batch
    cosine: float  # mean per-sample cosine similarity
    kl: float  # mean KL(softmax(r) || softmax(c)), in nats
    top1_agreement: float
    top5_agreement: float  # share of samples whose top-5 sets (as sets) are equal
    # How much the reference's own top-1s say (see validate.top1_meaningful): distinct top-1
    # classes over the samples, and the median softmax gap between its first and second class.
    reference_classes: int = 0
    reference_margin: float = 0.0
    classes: int = 0  # logits per sample (0 in manifests older than the field)
    # Top-1 agreement over the samples whose reference top-1 is confident (CONFIDENT_MARGIN).
    confident_samples: int = 0
    confident_top1_agreement: float = 1.0
    # Share of samples whose reference top-1 is among the candidate's five best classes: the figure
    # users quote as "top-5". 0 in manifests older than the field, so an old record never passes a check on it.
    top5_containment: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def drift(reference: np.ndarray, candidate: np.ndarray) -> Drift:
    r = np.asarray(reference, np.float64).reshape(len(reference), -1)
    c = np.asarray(candidate, np.float64).reshape(len(candidate), -1)
    if r.shape != c.shape:
        raise ValueError(f"output shapes differ: reference {r.shape}, candidate {c.shape}")
    diff = np.abs(r - c)
    norms = np.linalg.norm(r, axis=1) * np.linalg.norm(c, axis=1)
    cosine = np.where(norms > 0, (r * c).sum(axis=1) / np.maximum(norms, 1e-30), 1.0)
    p, q = _softmax(r), _softmax(c)
    kl = (p * (np.log(np.maximum(p, 1e-30)) - np.log(np.maximum(q, 1e-30)))).sum(axis=1)
    agree = r.argmax(1) == c.argmax(1)
    confident = _margins(p) >= CONFIDENT_MARGIN
    k = min(5, r.shape[1])
    top5_r = np.sort(np.argsort(-r, axis=1)[:, :k], axis=1)
    top5_c = np.sort(np.argsort(-c, axis=1)[:, :k], axis=1)
    return Drift(
        samples=len(r),
        max_abs=float(diff.max()),
        mean_abs=float(diff.mean()),
        rel_max_abs=float(diff.max() / max(np.abs(r).max(), 1e-12)),
        rel_l2=float(np.linalg.norm(r - c) / max(np.linalg.norm(r), 1e-12)),
        cosine=float(cosine.mean()),
        kl=float(kl.mean()),
        top1_agreement=float(agree.mean()),
        top5_agreement=float((top5_r == top5_c).all(axis=1).mean()),
        reference_classes=int(len(np.unique(r.argmax(1)))),
        reference_margin=float(np.median(_margins(p))),
        classes=int(r.shape[1]),
        confident_samples=int(confident.sum()),
        confident_top1_agreement=float(agree[confident].mean()) if confident.any() else 1.0,
        top5_containment=float((top5_c == r.argmax(1)[:, None]).any(axis=1).mean()),
    )


def confidence_margins(logits: np.ndarray) -> np.ndarray:
    """Per sample: how far its top-1 softmax probability leads the second's (1 for a single class)."""
    return _margins(_softmax(np.asarray(logits, np.float64).reshape(len(logits), -1)))


def _margins(probabilities: np.ndarray) -> np.ndarray:
    """Per sample: the softmax probability of the first class minus that of the second."""
    if probabilities.shape[1] < 2:
        return np.ones(len(probabilities))
    top2 = np.sort(probabilities, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]
