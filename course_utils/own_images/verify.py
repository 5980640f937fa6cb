"""A "no match" answer (lesson 10): a cosine-similarity threshold calibrated on held-out data, as TensorFlow
Similarity's ``calibrate``/``match`` and OpenMetricLearning's thresholding do, and open-set evaluation.

For verification (1:1, ``calibrate``), pairs of held-out images of the same class are *positives*, of different
classes *negatives*. For search (1:N, ``calibrate_search``), a held-out query whose nearest gallery image is of its
class is a positive, one whose nearest image is of another class (every query of a class the gallery lacks) a
negative: the best of N similarities is higher than a typical pair's, so search needs its own threshold. Above
a threshold a score is declared a match: precision, recall and F1 of that decision against the threshold, and the
biometric names for its two errors: FMR (false match rate: negatives above the threshold) and FNMR (false
non-match rate: positives below it). The calibration stored with a model is ``calibration.json`` in the run folder."""
import json
from pathlib import Path

import torch
import torch.nn.functional as F

FILE = "calibration.json"
FMRS = (1e-3, 1e-2)


def pair_similarities(embeddings, labels) -> tuple:
    """(cosine similarities of the positive pairs, of the negative pairs) among embeddings (N, D), each pair once."""
    unit = F.normalize(embeddings.float(), dim=1)
    rows, cols = torch.triu_indices(len(unit), len(unit), offset=1)
    similarity = (unit[rows] * unit[cols]).sum(1)
    same = labels[rows] == labels[cols]
    return similarity[same], similarity[~same]


def curve(positives, negatives) -> dict:
    """Precision, recall and F1 of "match when similarity >= t" for every threshold ``t`` a pair takes, from the
    highest down; ``next`` is the similarity of the next pair down (the gap a threshold may be put in)."""
    scores = torch.cat([positives, negatives])
    order = scores.argsort(descending=True)
    is_pos = torch.cat([torch.ones(len(positives)), torch.zeros(len(negatives))])[order]
    true_pos = is_pos.cumsum(0)
    declared = torch.arange(1, len(scores) + 1, dtype=torch.float)
    precision, recall = true_pos / declared, true_pos / max(len(positives), 1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    ranked = scores[order]
    return {"threshold": ranked, "next": torch.cat([ranked[1:], ranked[-1:]]), "precision": precision,
            "recall": recall, "f1": f1}


def fnmr_at_fmr(positives, negatives, fmr: float) -> tuple:
    """(threshold, FNMR): the lowest threshold that lets at most ``fmr`` of the negatives match, and the
    fraction of positives below it."""
    allowed = int(fmr * len(negatives))  # negatives allowed at or above the threshold
    top = negatives.sort(descending=True).values
    threshold = float(top[allowed]) + 1e-6 if allowed < len(top) else float(top[-1])
    return threshold, float((positives < threshold).float().mean())


def calibrate_scores(positives, negatives) -> dict:
    """The calibration of scores that should match (``positives``) and should not (``negatives``): the threshold
    of best F1 (the default decision; halfway to the next score, so that new scores near the boundary fall on the
    side of the gap they are closer to), its precision and recall, and the threshold and FNMR at each FMR of
    ``FMRS``."""
    if len(positives) == 0 or len(negatives) == 0:
        raise ValueError("Calibration needs held-out images that should match and images that should not.")
    c = curve(positives, negatives)
    best = int(c["f1"].argmax())
    at_fmr = {f"{fmr:g}": dict(zip(("threshold", "fnmr"), fnmr_at_fmr(positives, negatives, fmr))) for fmr in FMRS}
    return {"threshold": float(c["threshold"][best] + c["next"][best]) / 2, "f1": float(c["f1"][best]),
            "precision": float(c["precision"][best]), "recall": float(c["recall"][best]), "at_fmr": at_fmr,
            "positives": len(positives), "negatives": len(negatives),
            "mean_positive": float(positives.mean()), "mean_negative": float(negatives.mean())}


def calibrate(embeddings, labels) -> dict:
    """Verification (1:1): the calibration of every pair of held-out embeddings (N, D), same class or not."""
    return {**calibrate_scores(*pair_similarities(embeddings, labels)), "kind": "pairs"}


def nearest_scores(queries, query_classes, gallery, gallery_classes) -> tuple:
    """Search (1:N): the cosine similarity of each query (N, D) to its nearest gallery image (M, D), split into
    (positives: the nearest image is of the query's class, negatives: it is not, as for every query of a class
    the gallery lacks). Classes are names (or any labels comparable across the two sets)."""
    similarity = F.normalize(queries.float(), dim=1) @ F.normalize(gallery.float(), dim=1).T
    best, nearest = similarity.max(1)
    right = torch.tensor([query_classes[q] == gallery_classes[int(g)] for q, g in enumerate(nearest)])
    return best[right], best[~right]


def calibrate_search(queries, query_classes, gallery, gallery_classes) -> dict:
    """The threshold ``search`` answers "no match" below: calibrated on held-out queries' nearest gallery images
    (``nearest_scores``); the queries should include classes the gallery lacks."""
    return {**calibrate_scores(*nearest_scores(queries, query_classes, gallery, gallery_classes)), "kind": "search"}


def save(run_dir, calibration: dict) -> None:
    (Path(run_dir) / FILE).write_text(json.dumps(calibration, indent=2) + "\n")


def load(run_dir) -> dict | None:
    """The run's calibration, or None if it has none."""
    path = Path(run_dir) / FILE
    return json.loads(path.read_text()) if path.is_file() else None


def threshold_of(calibration: dict | None, choice: str | None) -> float | None:
    """The threshold to decide with: ``choice`` ``"f1"`` (the default), ``"fmr=1e-3"``/``"fmr=0.01"`` (from the
    calibration), a number, or ``"none"`` (always answer)."""
    if choice == "none":
        return None
    if choice not in (None, "f1") and not choice.startswith("fmr="):
        return float(choice)
    if calibration is None:
        return None
    if choice in (None, "f1"):
        return calibration["threshold"]
    return calibration["at_fmr"][f"{float(choice[4:]):g}"]["threshold"]


def decide(similarities, threshold: float | None):
    """``True`` where the best similarity of a query (N,) is a match, ``False`` for "no match"."""
    if threshold is None:
        return torch.ones(len(similarities), dtype=torch.bool)
    return similarities >= threshold


def open_set(best_similarity, correct, known, threshold: float | None) -> dict:
    """Open-set search at ``threshold``: of the queries whose class is in the gallery (``known``), the fraction
    answered with a right first neighbour (``correct``) and not rejected; of the unknown ones, the fraction
    rejected ("no match"), as it should be."""
    accepted = decide(best_similarity, threshold)
    result = {"known_answered_right": float((accepted & correct)[known].float().mean()) if known.any() else None,
              "unknown_rejected": float((~accepted)[~known].float().mean()) if (~known).any() else None}
    return {**result, "threshold": threshold}


def summary(calibration: dict) -> str:
    """Two lines on a calibration: the F1 threshold with its precision and recall, and FNMR at each FMR."""
    c = calibration
    fmr = ", ".join(f"FNMR {v['fnmr']:.3f} at FMR {k} (threshold {v['threshold']:.4f}{rough(float(k), c)})"
                    for k, v in c["at_fmr"].items())
    what = "pairs" if c.get("kind") == "pairs" else "queries (nearest gallery image of the right class or not)"
    return (f"threshold {c['threshold']:.4f}: F1 {c['f1']:.3f}, precision {c['precision']:.3f}, recall "
            f"{c['recall']:.3f} on {c['positives']} positive and {c['negatives']} negative held-out {what}\n{fmr}")


def rough(fmr: float, calibration: dict) -> str:
    """A warning for ``summary`` when an FMR rests on fewer than 10 held-out negatives above its threshold: the
    estimate is then rough, and below one negative it is only the highest negative's score."""
    allowed = fmr * calibration["negatives"]
    return "" if allowed >= 10 else f"; rough: {allowed:.1f} of {calibration['negatives']} negatives allowed above it"


def plot_calibration(positives, negatives, calibration: dict, axes=None):
    """Two panels: the similarity distributions of positive and negative held-out scores (pairs, or queries'
    nearest gallery images) with the calibrated threshold, and precision, recall and F1 against the threshold.
    Returns the Figure."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 4))
    left, right = axes
    bins = torch.linspace(float(torch.cat([positives, negatives]).min()), 1, 50).tolist()
    left.hist(negatives.tolist(), bins=bins, density=True, alpha=0.6, label=f"negatives ({len(negatives)})")
    left.hist(positives.tolist(), bins=bins, density=True, alpha=0.6, label=f"positives ({len(positives)})")
    c = curve(positives, negatives)
    for name in ("precision", "recall", "f1"):
        right.plot(c["threshold"].tolist(), c[name].tolist(), label=name)
    for ax in axes:
        ax.axvline(calibration["threshold"], color="black", linestyle="--", label="threshold (best F1)")
        ax.set_xlabel("cosine similarity")
        ax.legend()
    left.set(ylabel="density", title="Held-out scores that should match (positives) or not")
    right.set(ylabel="score of 'match when similarity >= threshold'", title="Precision, recall, F1 vs threshold")
    return left.figure
