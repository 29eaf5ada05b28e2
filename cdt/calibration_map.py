"""The calibration map: critic probability -> observed error rate, written next to the checkpoint.

`cdt calibrate` builds it (from its reliability buckets, or fitted with `--fit temperature`,
`--fit platt` or `--fit isotonic`); the `critic-calibrated` sampling policy reads it. Kinds:
- buckets / isotonic: piecewise-linear through (x, y) points, constant beyond the ends;
- temperature: sigmoid(logit(p) / T); platt: sigmoid(logit(p) / T + bias).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from cdt.errors import CdtError
from cdt.rundir import MAP_NAME, write_text
from cdt.settings import FITS

KINDS = ("buckets", "isotonic", "temperature", "platt")
# sampler settings a map does not depend on: the policy that uses the map differs from the one it was
# measured with by design, and the seed only draws; every other setting is recorded in info["sampler"]
NOT_RECORDED = ("policy", "seed")
EPS = 1e-6


@dataclass
class CalibrationMap:
    kind: str
    xs: list[float] = field(default_factory=list)  # buckets/isotonic: critic probabilities, ascending
    ys: list[float] = field(default_factory=list)  # ... and the error rates they map to
    temperature: float | None = None
    bias: float = 0.0  # platt: the intercept added to logit(p) / T
    info: dict = field(default_factory=dict)  # where it came from (samples, tokens, checkpoint step, sampler)

    def __call__(self, p):
        """Map probabilities (numpy array or tensor) to calibrated error rates, same type and shape."""
        if isinstance(p, torch.Tensor):
            return torch.from_numpy(self(p.detach().cpu().double().numpy())).to(p.device, p.dtype)
        p = np.asarray(p, dtype=np.float64)
        if self.kind in ("temperature", "platt"):
            z = np.log(np.clip(p, EPS, 1 - EPS)) - np.log1p(-np.clip(p, EPS, 1 - EPS))
            return 1.0 / (1.0 + np.exp(-(z / self.temperature + self.bias)))
        return np.interp(p, self.xs, self.ys)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CalibrationMap":
        m = cls(**d)
        if m.kind not in KINDS:
            raise ValueError(f"unknown kind {m.kind!r}")
        if m.kind in ("temperature", "platt"):
            if not (isinstance(m.temperature, (int, float)) and m.temperature > 0):
                raise ValueError("temperature must be positive")
        elif not m.xs or len(m.xs) != len(m.ys) or any(b < a for a, b in zip(m.xs, m.xs[1:])):
            raise ValueError("xs and ys must be non-empty, of equal length, xs ascending")
        return m


def from_buckets(buckets, info: dict | None = None) -> CalibrationMap:
    """Through each non-empty bucket's (mean critic probability, observed error rate)."""
    pts = sorted((b.mean_prob, b.error_rate) for b in buckets if b.count)
    if not pts:
        raise CdtError("no generated tokens to build a calibration map from")
    return CalibrationMap("buckets", [x for x, _ in pts], [y for _, y in pts], info=info or {})


def fit(kind: str, probs: np.ndarray, labels: np.ndarray, weights: np.ndarray, info: dict | None = None) -> CalibrationMap:
    """Fit a map on weighted (probability, wrong) points with scikit-learn."""
    if kind not in FITS:
        raise CdtError(f"unknown fit {kind!r}; choose from {', '.join(FITS)}")
    if len(np.unique(labels[weights > 0])) < 2:
        raise CdtError("fitting a calibration map needs both right and wrong tokens in the fitting folds")
    if kind == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(probs, labels, sample_weight=weights)
        return CalibrationMap("isotonic", iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist(), info=info or {})
    from sklearn.linear_model import LogisticRegression

    p = np.clip(probs, EPS, 1 - EPS)
    z = (np.log(p) - np.log1p(-p))[:, None]
    lr = LogisticRegression(fit_intercept=kind == "platt", C=1e6).fit(z, labels, sample_weight=weights)
    slope = float(lr.coef_[0, 0])
    if slope <= 0:
        raise CdtError(f"the critic's probabilities are anti-correlated with errors; {kind} scaling cannot fit")
    return CalibrationMap(kind, temperature=1.0 / slope, bias=float(lr.intercept_[0]) if kind == "platt" else 0.0,
                          info=info or {})


def save(run_dir: Path, cmap: CalibrationMap) -> Path:
    path = Path(run_dir) / MAP_NAME
    write_text(path, json.dumps(cmap.to_dict(), indent=2) + "\n")
    return path


def load(run_dir: Path) -> CalibrationMap | None:
    """The map in `run_dir`, or None when calibrate has not written one."""
    path = Path(run_dir) / MAP_NAME
    if not path.is_file():
        return None
    try:
        return CalibrationMap.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        raise CdtError(f"{path} is not a valid calibration map ({e}); delete it or rerun cdt calibrate") from None


def sampler_info(cfg, with_steps: bool = True) -> dict:
    """The sampler settings a map's error rates depend on, as `cdt calibrate` records them in `info["sampler"]`
    (`with_steps=False` where one run uses several step counts, as `cdt eval` does)."""
    return {k: v for k, v in cfg.to_dict().items() if k not in NOT_RECORDED and (with_steps or k != "steps")}


def _mismatch(measured: dict, now: dict) -> str | None:
    """'temperature 1 (now 0), schedule linear (now power:4)' for the keys both know that differ
    (a map written before a setting was recorded is not compared on it)."""
    differ = [f"{k} {measured[k]!r} (now {now[k]!r})" for k in now if k in measured and measured[k] != now[k]]
    return ", ".join(differ) or None


def for_sampler(run_dir: Path, cfg, with_steps: bool = True) -> tuple[CalibrationMap | None, str | None]:
    """The map `cfg`'s policy needs, and a warning when it is missing (`critic-calibrated` then acts as
    `critic`) or was measured with other sampler settings than `cfg` (a SampleConfig) has."""
    if cfg.policy != "critic-calibrated":
        return None, None
    cmap = load(run_dir)
    if cmap is None:
        return None, (f"no calibration map in {run_dir} (run cdt calibrate first); "
                      "critic-calibrated falls back to the raw critic probability")
    measured = cmap.info.get("sampler") if isinstance(cmap.info, dict) else None
    differ = _mismatch(measured if isinstance(measured, dict) else {}, sampler_info(cfg, with_steps))
    if differ:
        return cmap, (f"the calibration map in {run_dir} was measured with another sampler: {differ}; its error "
                      "rates may not hold here (rerun cdt calibrate with this run's flags)")
    return cmap, None
