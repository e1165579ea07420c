"""Panoptic quality (PQ; Kirillov et al. 2019) of decoded predictions against annotations.

Ground truth: 'semantic' class ids (0: void) and 'instances', given the thing classes:
each instance (id > 0) of a thing class is a segment, the id-0 pixels of a thing class
are a crowd, and each stuff class is one segment. Prediction: class and region ids
(`lavin_jax.data.tasks.decode_panoptic`): each region of a thing class is a segment, the
regions of a stuff class together are one. As COCO's panoptic evaluation defines it:
- a predicted and a true segment of one class match when their IoU exceeds 0.5 (so at
  most one match each), the union not counting the predicted segment's void pixels;
- true segments without a match are false negatives (crowds are never counted);
- predicted segments without a match are false positives, unless more than half of
  their pixels lie on void or on a crowd of their class.
Per class c: PQ_c = (sum of the matches' IoUs) / (TP + FP / 2 + FN / 2), SQ_c = IoU sum
/ TP (0 without TP), RQ_c = TP / (TP + FP / 2 + FN / 2), counts pooled over the data
set; PQ, SQ and RQ are their means over the classes with any TP, FP or FN.
"""

from typing import Iterable

import numpy as np

_SHIFT = 32  # A segment key is class << 32 | id.


class PanopticQuality:
  """Counts of one data set; `add` one frame at a time, `result` the means."""

  def __init__(self, thing_classes: Iterable[int]):
    self.things = np.asarray(sorted(set(int(c) for c in thing_classes)), np.int64)
    self.counts: dict[int, np.ndarray] = {}  # class -> [TP, FP, FN, IoU sum]

  def _count(self, key: int, column: int, value: float = 1.0) -> None:
    self.counts.setdefault(int(key) >> _SHIFT, np.zeros(4))[column] += value

  def add(self, pred_classes, pred_regions, semantic, instances) -> None:
    """Adds one frame: predicted (H, W) class and region ids, true (H, W) ids."""
    semantic = np.asarray(semantic, np.int64)
    pred_classes = np.asarray(pred_classes, np.int64)
    true_ids = np.where(np.isin(semantic, self.things), instances, 0)
    true = np.where(semantic > 0, semantic << _SHIFT | true_ids, -1).ravel()
    pred_ids = np.where(np.isin(pred_classes, self.things), pred_regions, 0)
    pred = np.where(pred_classes > 0, pred_classes << _SHIFT | pred_ids, -1).ravel()
    crowd = (true >= 0) & np.isin(true >> _SHIFT, self.things) & (true & 0xFFFFFFFF == 0)

    pairs, overlap = np.unique(
      np.stack([pred, np.where(crowd, -2 - true, true)]), axis=1, return_counts=True
    )
    pred_area = dict(zip(*np.unique(pred[pred >= 0], return_counts=True)))
    true_area = dict(zip(*np.unique(true[(true >= 0) & ~crowd], return_counts=True)))
    ignored = dict.fromkeys(pred_area, 0)  # Predicted pixels on void or their class's crowd.
    on_void = dict.fromkeys(pred_area, 0)
    matched_pred, matched_true = set(), set()
    for (p, t), n in zip(pairs.T, overlap):
      if p < 0:
        continue
      if t == -1:
        ignored[p] += n
        on_void[p] += n
      elif t < -1 and (-2 - t) >> _SHIFT == p >> _SHIFT:
        ignored[p] += n
    for (p, t), n in zip(pairs.T, overlap):
      if p >= 0 and t >= 0 and p >> _SHIFT == t >> _SHIFT:
        iou = n / (pred_area[p] + true_area[t] - n - on_void[p])
        if iou > 0.5:
          matched_pred.add(p)
          matched_true.add(t)
          self._count(t, 0)
          self._count(t, 3, iou)
    for p, area in pred_area.items():
      if p not in matched_pred and ignored[p] <= area / 2:
        self._count(p, 1)
    for t in true_area:
      if t not in matched_true:
        self._count(t, 2)

  def result(self) -> dict[str, float]:
    """{'pq', 'sq', 'rq'}: means over the classes seen (1.0 each when none were)."""
    if not self.counts:
      return {"pq": 1.0, "sq": 1.0, "rq": 1.0}
    tp, fp, fn, iou = np.array(list(self.counts.values())).T
    denominator = tp + fp / 2 + fn / 2
    return {
      "pq": float(np.mean(iou / denominator)),
      "sq": float(np.mean(np.where(tp > 0, iou / np.maximum(tp, 1), 0.0))),
      "rq": float(np.mean(tp / denominator)),
    }
