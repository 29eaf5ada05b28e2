"""What each command can be told: its settings as dataclasses, one field per command-line flag.

A field made with `flag(default, help)` is a flag of every command that takes its dataclass
(`cdt/options.py` declares it from the field); a nested dataclass (`SampleConfig` inside
`CalibrateSettings`) brings its own flags. Each dataclass validates itself in one `validate()`,
run before any model loads. `RunConfig` (model, data, train) lives in `cdt/config.py`.
No torch here, so `cdt --help` stays fast.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from cdt.errors import UsageError, deprecated

COMMITS = ("remask", "lock", "threshold")
SELECTIONS = ("topk", "gumbel")
# the registered policies (cdt.sampling.policies.POLICIES), spelled out so that --help does not import torch;
# a test keeps the two in step
POLICY_NAMES = ("random", "confidence", "margin", "entropy", "rcr", "critic", "critic-1pass", "critic-calibrated",
                "critic-confidence")
MASKS = ("answer", "random", "span")
BINNINGS = ("uniform", "quantile")
FITS = ("temperature", "platt", "isotonic")
CALIBRATE_MODES = ("generate", "step")
SCORE_SOURCES = ("critic", "value-head")
DIRECTIONS = ("ge", "le", "auto")
GRIDS = ("exact", "quantile", "range")
EXPLORE_MODES = ("generate", "step")
COLOURINGS = ("critic", "confidence", "correctness")
DEVICES = ("auto", "cpu", "cuda")  # cuda:N names one GPU
SEED_MAX = 2**32 - 1  # every seed is in [0, SEED_MAX]
MAX_TAUS = 100_000  # the most thresholds a quantile or range grid may hold


def flag(default, help: str, *, name: str | None = None):
    """A dataclass field that is also a command-line flag (`--field-name`, or `name`)."""
    return field(default=default, metadata={"help": help, "name": name})


def flags_of(factory, panel: str, exclude: tuple[str, ...] = ()):
    """A nested settings dataclass whose fields are flags too (shown under `panel` in --help)."""
    return field(default_factory=factory, metadata={"panel": panel, "exclude": exclude})


def from_flags(cls, **values):
    """`cls` from flag values given flat, as on the command line (a nested dataclass's fields beside the
    others); a list flag may be given as its comma-separated text. Unknown names are errors."""
    obj = _with(cls(), values)
    if values:
        raise TypeError(f"{cls.__name__} has no flag {', '.join(values)}")
    return obj


def _with(obj, values: dict):
    """`obj` with the fields `values` names (taken out of it), nested settings included."""
    hints = typing.get_type_hints(type(obj))
    changes = {}
    for f in fields(obj):
        if "panel" in f.metadata:
            inner = getattr(obj, f.name)
            own = set(flag_dict(inner, f.metadata["exclude"]))
            changes[f.name] = _with(inner, {k: values.pop(k) for k in list(values) if k in own})
        elif f.name in values:
            value = values.pop(f.name)
            if typing.get_origin(hints[f.name]) is tuple:
                item = typing.get_args(hints[f.name])[0]
                value = tuple(split_list(value, item, "--" + f.name.replace("_", "-")) if isinstance(value, str)
                              else value)
            changes[f.name] = value
    return replace(obj, **changes)


def split_list(value: str, cast, flag_name: str) -> list:
    """'8,16,32' -> [8, 16, 32]: a flag that takes a comma-separated list."""
    try:
        items = [cast(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{flag_name} expects a comma-separated list, got {value!r}") from None
    if not items:
        raise UsageError(f"{flag_name} is empty")
    return items


def leaf_fields(obj, panel: str | None = None, exclude: tuple[str, ...] = ()):
    """(field, its type, value, panel) for every field of settings object `obj`, a nested dataclass's
    fields in its place (but those the outer one sets itself): the one walk that the flags, the flat
    dicts and the parsing of flag values share."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        if "panel" in f.metadata:
            yield from leaf_fields(value, f.metadata["panel"], f.metadata["exclude"])
        elif f.name not in exclude:
            yield f, hints[f.name], value, panel


def flag_dict(obj, exclude: tuple[str, ...] = ()) -> dict:
    """A settings object as its flags read, flat: a nested dataclass's fields beside the others."""
    return {f.name: value for f, _, value, _ in leaf_fields(obj, exclude=exclude)}


def check_finite(obj) -> None:
    """Every number a settings object holds is finite: NaN or infinity is no setting (one line names the flag)."""
    for f, _, value, _ in leaf_fields(obj):
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{f.metadata.get('name') or '--' + f.name.replace('_', '-')} must be a finite number, "
                             f"got {value}")


def check_device(name: str, flag_name: str = "--device") -> None:
    if name not in DEVICES and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise UsageError(f"unknown {flag_name} {name!r}; choose from {', '.join(DEVICES)} (or cuda:N)")


def check_seed(seed: int, flag_name: str = "--seed") -> None:
    if not 0 <= seed <= SEED_MAX:
        raise UsageError(f"{flag_name} must be between 0 and {SEED_MAX} (2^32 - 1), got {seed}")


def tau_range_count(start: float | None, stop: float | None, step: float | None) -> int:
    """The thresholds of the range grid start..stop by step, checked: none missing, step > 0, at most MAX_TAUS."""
    if None in (start, stop, step) or step <= 0 or stop < start:
        raise UsageError("a τ range needs --tau-start <= --tau-stop and --tau-step > 0")
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    if count > MAX_TAUS:
        raise UsageError(f"--tau-step {step:g} makes {count:,} thresholds over [{start:g}, {stop:g}]; at most "
                         f"{MAX_TAUS:,}: raise --tau-step (--grid exact already tries every distinct score)")
    return count


def _choice(flag_name: str, value, allowed) -> None:
    if value not in allowed:
        raise UsageError(f"unknown {flag_name} {value!r}; choose from {', '.join(allowed)}")


def _at_least(lo: int, **values) -> None:
    for name, value in values.items():
        if value < lo:
            raise UsageError(f"--{name.replace('_', '-')} must be at least {lo}, got {value}")


def _share(**values) -> None:
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise UsageError(f"--{name.replace('_', '-')} must be between 0 and 1, got {value}")


@dataclass
class SampleConfig:
    """How to generate. Scores: higher = remask first; critic probabilities: higher = more likely wrong."""

    steps: int | None = flag(None, "Denoising steps [default: the checkpoint's sample.steps, 16].")
    policy: str = flag("confidence", f"Remasking policy: {', '.join(POLICY_NAMES)}.")
    commit: str = flag("remask", "remask (committed tokens may be remasked), lock (final once committed), "
                                 "threshold (commit all above --threshold).")
    threshold: float = flag(0.9, "threshold mode: confidence (1 - score) needed to commit.")
    distrust: float = flag(1.0, "threshold mode: mask an earlier commit again when its score rises above this "
                                "(a critic policy re-judges every step); 1 = never.")
    lock_threshold: float = flag(0.9, "rcr policy: confidence at which a position locks.")
    # linear commits the same share every step; cosine (MaskGIT) commits few at first and most at the end,
    # when the hardest tokens are left: on toolcalls it lost 5-14 points of valid JSON at 16 steps. power:P
    # (P > 1) does the opposite: most at first, few at the end, where nothing is left to check a commit
    schedule: str = flag("linear", "How many positions stay masked after each step: linear (the same share each "
                                   "step) | cosine (few first, most at the end) | power:P (a share (1 - s/T)^P still "
                                   "masked after step s of T; P > 1 commits most at first and can finish before "
                                   "step T).")
    temperature: float = flag(1.0, "Generator temperature; 0 = greedy.")
    top_k: int = flag(0, "Sample among the k most likely characters; 0 = off.")
    top_p: float = flag(1.0, "Nucleus sampling mass; 1 = off.")
    randomness: float = flag(0.0, "Blend scores with noise: (1 - r)·score + r·U.")
    selection: str = flag("topk", "topk: remask the worst; gumbel: sample them, p ~ score.")
    blocks: int = flag(1, "Semi-autoregressive (LLaDA): fill the region in this many left-to-right blocks, each "
                          "with its share of the steps; 1 = off.")
    spread: bool = flag(False, "Never commit two adjacent new tokens in one step: the best of each run of masked "
                               "neighbours goes first (remask and lock modes; threshold ignores it).")
    seed: int = flag(0, "Seed of every draw; the same seed gives the same output (each row has its own draws).")

    def validate(self) -> None:
        """Every rule a flag can break; steps=None (the checkpoint's default) is checked again by
        `for_checkpoint`."""
        check_finite(self)
        if self.steps is not None:
            _at_least(1, steps=self.steps)
        if self.blocks < 1 or (self.steps is not None and self.blocks > self.steps):
            raise UsageError(f"--blocks must be between 1 and --steps ({self.steps}), got {self.blocks}")
        _choice("policy", self.policy, POLICY_NAMES)
        schedule_fraction(self.schedule, 0.0)
        _choice("commit", self.commit, COMMITS)
        _choice("selection", self.selection, SELECTIONS)
        _share(threshold=self.threshold, distrust=self.distrust, lock_threshold=self.lock_threshold,
               randomness=self.randomness)
        if not 0.0 < self.top_p <= 1.0 or self.top_k < 0 or self.temperature < 0:
            raise UsageError("--top-p must be in (0, 1], --top-k and --temperature at least 0")
        check_seed(self.seed)

    def for_checkpoint(self, ckpt) -> SampleConfig:
        """This config with what it leaves to the checkpoint filled in (steps: its `sample.steps`), validated."""
        cfg = replace(self, steps=self.steps or ckpt.config.sample.steps)
        cfg.validate()
        return cfg

    def check_fits(self, block_size: int) -> None:
        """Refuse more steps than a row of the model has positions (eval and calibrate, whose regions vary
        by row, cannot cap steps without changing their figures)."""
        if self.steps is not None and self.steps > block_size:
            raise UsageError(f"--steps {self.steps} is more than the model's block size ({block_size}): no row has "
                             "that many positions to fill")

    def capped(self, positions: int) -> tuple[SampleConfig, str | None]:
        """This config with at most one step per position to fill (more steps only repeat passes), and the
        notice saying so when it cut them."""
        if self.steps is None or self.steps <= positions:
            return self, None
        return (replace(self, steps=positions, blocks=min(self.blocks, positions)),
                f"--steps {self.steps} is more than the {positions} positions to fill; running {positions} steps")

    def to_dict(self) -> dict:
        return flag_dict(self)


def schedule_fraction(schedule: str, r: float) -> float:
    """The share of the region still masked once a share r of the steps is done: linear 1 - r, cosine
    cos(pi r / 2), power:P (1 - r)^P. A bad name is a UsageError."""
    if schedule == "linear":
        return 1.0 - r
    if schedule == "cosine":
        return math.cos(math.pi / 2 * r)
    name, _, power = schedule.partition(":")
    try:
        p = float(power) if name == "power" else None
    except ValueError:
        p = None
    if p is None or not math.isfinite(p) or p <= 0:
        raise UsageError(f"unknown schedule {schedule!r}; choose from linear, cosine, power:P (P > 0, e.g. power:3)")
    return (1.0 - r) ** p


SAMPLER = "Sampler (sample, eval, calibrate, explore and bench share these)"
MASK_HELP = ("Held-out region to infill: answer (toolcalls default), random (each position with p = --mask-ratio), "
             "span (one run; text default).")
RATIO_HELP = "random/span: share of maskable positions masked."
DEVICE_HELP = "auto | cpu | cuda (bf16 autocast on CUDA, fp32 on CPU)."


def _mask(mask: str | None, ratio: float) -> None:
    if mask is not None:
        _choice("mask", mask, MASKS)
    _share(mask_ratio=ratio)


@dataclass
class EvalSettings:
    """`cdt eval`: every policy at every step count on the same held-out rows."""

    policies: tuple[str, ...] = flag(("confidence", "critic"), "Comma-separated remasking policies to compare, from: "
                                                               f"{', '.join(POLICY_NAMES)}.")
    steps: tuple[int, ...] = flag((8, 16, 32), "Comma-separated step counts.")
    n: int = flag(256, "Held-out rows to infill (toolcalls records or text windows).")
    mask: str | None = flag(None, MASK_HELP)
    mask_ratio: float = flag(0.3, RATIO_HELP)
    batch_size: int = flag(64, "Rows per generation batch (results do not depend on it).")
    scaffold: bool = flag(False, "Fill only the value slots of scaffolded answers and grade structure, types, "
                                 "fields, [NULL] use and collapse.")
    sampler: SampleConfig = flags_of(SampleConfig, SAMPLER, exclude=("policy", "steps"))  # policies x steps vary
    device: str = flag("auto", DEVICE_HELP)

    def validate(self) -> None:
        check_finite(self)
        check_device(self.device)
        if not self.policies or not self.steps:
            raise UsageError("--policies and --steps each need at least one value")
        _at_least(1, steps=min(self.steps), n=self.n, batch_size=self.batch_size)
        for p in self.policies:
            replace(self.sampler, policy=p, steps=min(self.steps)).validate()
        _mask(self.mask, self.mask_ratio)
        if self.scaffold and self.mask not in (None, "answer"):
            raise UsageError("--scaffold fills the value slots; it cannot be combined with --mask random/span")

    def settings(self):
        """Every (policy, steps) setting as a SampleConfig, every policy at one step count before the next:
        an interrupted run has still compared the policies at the fewest steps."""
        for steps in self.steps:
            for policy in self.policies:
                yield replace(self.sampler, policy=policy, steps=steps)


@dataclass
class CalibrateSettings:
    """`cdt calibrate`: how many generations, how they are made, how their critic scores are binned."""

    n_samples: int = flag(500, "Generations to score (held-out prompts x --samples-per-prompt).")
    samples_per_prompt: int = flag(1, "Seeded generations per prompt.")
    mode: str = flag("generate", "generate: full generations; step: one training-style step at random t.")
    sampler: SampleConfig = flags_of(lambda: SampleConfig(policy="critic"), SAMPLER)  # generate mode
    mask: str | None = flag(None, MASK_HELP)
    mask_ratio: float = flag(0.3, RATIO_HELP)
    buckets: int = flag(20, "Reliability buckets.")
    binning: str = flag("uniform", "uniform: equal-width buckets; quantile: equal token counts.")
    top: int = flag(5, "A sample's score = mean of its top-N token critic probabilities.")
    fit: str | None = flag(None, "Recalibrate: temperature | platt | isotonic, cross-fitted over 5 folds of held-out "
                                 "rows (the ECE after is measured only on rows its map was not fitted on); the map "
                                 "fitted on all samples feeds --policy critic-calibrated.")
    bootstrap: int = flag(1000, "Bootstrap resamples of held-out rows for the intervals; 0: none.")
    confidence: float = flag(0.95, "Level of the bootstrap intervals.")
    score_source: str = flag("critic", "critic: score = top-N critic mean (higher = more likely wrong); "
                                       "value-head: the value head (higher = more likely right).")
    batch_size: int = flag(32, "Generations per batch (results do not depend on it).")
    device: str = flag("auto", DEVICE_HELP)

    def validate(self) -> None:
        check_finite(self)
        check_device(self.device)
        self.sampler.validate()
        _at_least(1, n_samples=self.n_samples, samples_per_prompt=self.samples_per_prompt, buckets=self.buckets,
                  top=self.top, batch_size=self.batch_size)
        _choice("mode", self.mode, CALIBRATE_MODES)
        _mask(self.mask, self.mask_ratio)
        _choice("binning", self.binning, BINNINGS)
        if self.fit is not None:
            _choice("fit", self.fit, FITS)
        _choice("score source", self.score_source, SCORE_SOURCES)
        _at_least(0, bootstrap=self.bootstrap)
        if not 0.0 < self.confidence < 1.0:
            raise UsageError(f"--confidence must be in (0, 1), got {self.confidence}")

    def to_dict(self) -> dict:
        return flag_dict(self)


@dataclass
class SweepSettings:
    """`cdt sweep-tau`: which fields to read, how to choose τ, where the report goes."""

    score_key: str = flag("score", "Field holding the score.")
    label_key: str = flag("label", "Field holding the label (1 = wrong).")
    direction: str = flag("auto", "ge: flag score >= τ; le: flag score <= τ; auto: by AUROC (explained).")
    recall_target: float = flag(0.9, "Pick the most precise τ whose recall is at least this, in (0, 1].")
    confidence: float = flag(0.95, "Promise recall >= target on new samples with at least this probability (exact "
                                   "binomial bound per τ, tested from the τ that flags most toward stricter ones, "
                                   "stopping at the first failure; assumes new samples are exchangeable with "
                                   "these). 0: choose on these samples alone (no promise).")
    accuracy_target: float | None = flag(None, "Also find the most samples to accept unreviewed (score on the "
                                               "trusted side of τ) with accuracy >= this, at --confidence (one "
                                               "seeded half of the samples orders the candidates, the other "
                                               "tests them).")
    bootstrap: int = flag(1000, "Bootstrap resamples for the intervals (samples of one group stay together); "
                                "0: none.")
    seed: int = flag(0, "Seed of the bootstrap and of the one sample per group the guarantee counts.")
    strict: bool = flag(False, "Exit 1 when a promise cannot be made (too little data, no τ certified).")
    grid: str = flag("exact", "exact: every distinct score; quantile: --n-tau quantiles in [--q-lo, --q-hi]; "
                              "range: --tau-start..--tau-stop by --tau-step.")
    n_tau: int = flag(40, "quantile grid: number of thresholds.")
    q_lo: float = flag(0.6, "quantile grid: lowest quantile.")
    q_hi: float = flag(0.99, "quantile grid: highest quantile.")
    tau_start: float | None = flag(None, "range grid: first τ (implies --grid range).")
    tau_stop: float | None = flag(None, "range grid: last τ.")
    tau_step: float | None = flag(None, "range grid: step.")
    examples: int = flag(5, "Examples shown per quadrant (flagged/unflagged x wrong/right).")
    model: str | None = flag(None, "Model name in the report file name [default: from the scores].")
    out_dir: Path = flag(Path("calibrated_params"), "Where the report goes; earlier reports are never overwritten.")

    def validate(self) -> None:
        check_finite(self)
        if not 0.0 < self.recall_target <= 1.0:
            raise UsageError(f"--recall-target must be in (0, 1], got {self.recall_target}")
        if not 0.0 <= self.confidence < 1.0:
            raise UsageError(f"--confidence must be in [0, 1), got {self.confidence}")
        if self.accuracy_target is not None and not 0.0 < self.accuracy_target <= 1.0:
            raise UsageError(f"--accuracy-target must be in (0, 1], got {self.accuracy_target}")
        _at_least(0, bootstrap=self.bootstrap)
        _choice("direction", self.direction, DIRECTIONS)
        _choice("grid", self.grid, GRIDS)
        _at_least(1, n_tau=self.n_tau)
        _at_least(0, examples=self.examples)
        if self.n_tau > MAX_TAUS:
            raise UsageError(f"--n-tau must be at most {MAX_TAUS:,}, got {self.n_tau:,}")
        if not 0.0 <= self.q_lo <= self.q_hi <= 1.0:
            raise UsageError("--q-lo and --q-hi must satisfy 0 <= q-lo <= q-hi <= 1")
        if self.chosen_grid == "range":
            tau_range_count(self.tau_start, self.tau_stop, self.tau_step)

    @property
    def chosen_grid(self) -> str:
        """`range` when any --tau-* value is given, else --grid."""
        return "range" if (self.tau_start, self.tau_stop, self.tau_step) != (None, None, None) else self.grid


@dataclass
class ExploreSettings:
    """`cdt explore`: which rows, how they are generated, how tokens are coloured. Keys change the sampler's
    policy and randomness, the colouring and the share `r` remasks."""

    prompt: str | None = flag(None, "Explore a free prompt instead of held-out rows (no reference).")
    length: int = flag(96, "With --prompt: characters to generate.")
    index: int = flag(0, "Held-out row to start from.")
    n: int = flag(32, "Held-out rows to browse (next/previous sample).")
    mask: str | None = flag(None, MASK_HELP)
    mask_ratio: float = flag(0.3, RATIO_HELP)
    mode: str = flag("generate", "generate: step through denoising; step: the training step's view (one corruption "
                                 "at random t, as calibrate --mode step).")
    sampler: SampleConfig = flags_of(lambda: SampleConfig(policy="critic"), SAMPLER)
    colouring: str = flag("critic", "Colour tokens by critic, confidence or correctness.", name="--colour")
    device: str = flag("auto", DEVICE_HELP)
    remask_pct: int = 30  # the share the `r` key masks again

    def validate(self) -> None:
        check_finite(self)
        check_device(self.device)
        self.sampler.validate()
        _at_least(0, index=self.index)
        _at_least(1, n=self.n, length=self.length)
        _mask(self.mask, self.mask_ratio)
        _choice("mode", self.mode, EXPLORE_MODES)
        _choice("colouring", self.colouring, COLOURINGS)
        if self.mode == "step" and self.prompt is not None:
            raise UsageError("--mode step needs a held-out row (its reference); drop --prompt")

    def to_dict(self) -> dict:
        return flag_dict(self)


# the BFCL categories cdt reads: single-turn, one expected call (parallel ones expect several and are not read)
BFCL_CATEGORIES = ("simple_python", "multiple", "live_simple", "live_multiple")


@dataclass
class BenchSettings:
    """`cdt bench bfcl`: which BFCL requests, how their calls are generated and scored."""

    categories: tuple[str, ...] = flag(("simple_python", "multiple"), "Comma-separated BFCL categories, from: "
                                                                      f"{', '.join(BFCL_CATEGORIES)}.")
    n: int | None = flag(None, "Requests per category, a subset chosen with --seed [default: all].")
    data: str | None = flag(None, "Folder of BFCL's files (BFCL_v4_*.json, possible_answer/) [default: the "
                                  "installed bfcl-eval package, pip install --no-deps bfcl-eval].")
    sampler: SampleConfig = flags_of(SampleConfig, SAMPLER)
    top: int = flag(5, "A call's critic score = mean of its top-N slot critic probabilities (the --rows score).")
    batch_size: int = flag(32, "Requests per generation batch.")
    device: str = flag("auto", DEVICE_HELP)

    def validate(self) -> None:
        check_finite(self)
        check_device(self.device)
        self.sampler.validate()
        if not self.categories:
            raise UsageError("--categories needs at least one category")
        for c in self.categories:
            _choice("categories", c, BFCL_CATEGORIES)
        _at_least(1, top=self.top, batch_size=self.batch_size, **({} if self.n is None else {"n": self.n}))

    def to_dict(self) -> dict:
        return flag_dict(self)


@dataclass
class TrainSettings:
    """`cdt train`: what the command line says; `cdt.config.resolve_flags` turns it into a RunConfig
    (defaults < preset < --config < these flags and --set)."""

    preset: str | None = flag(None, "tiny (tests, seconds), small (the default, 10-20 min on 2 CPU cores), long "
                                    "(~3x the steps), functions (small on the functions corpus, scaffolded: the "
                                    "model cdt bench measures), copy_long (long with AdamW), base (GPU), "
                                    "value_pairwise (--stage value).")
    config: Path | None = flag(None, "YAML file with model/data/train sections; overrides the preset.")
    data: str | None = flag(None, "toolcalls (eight built-in tools), functions (generated functions of every "
                                  "argument type; validation on functions never seen) or a UTF-8 text file.")
    tokenizer: str | None = flag(None, "char (default: one token per character), bpe:SIZE (a byte-level BPE of "
                                       "SIZE tokens trained on the training split; needs cdt[hf]) or a "
                                       "tokenizer.json path.")
    backbone: str | None = flag(None, "own (default: cdt's trunk) or hf:PATH, a local masked LM in transformers "
                                      "format (BERT, RoBERTa, ModernBERT...): its head generates, cdt's critic reads "
                                      "its last hidden states; frozen unless --train-trunk. Needs cdt[hf].")
    trust_remote_code: bool = flag(False, "--backbone: run the model directory's own Python code (off by default; "
                                          "only for a directory you trust).")
    out: Path | None = flag(None, "Run directory [default: runs/PRESET-TIMESTAMP].")
    max_iters: int | None = flag(None, "Optimizer steps in all (a resumed run counts the earlier ones).")
    batch_size: int | None = flag(None, "Rows per step.")
    lr: float | None = flag(None, "Peak learning rate (adamw: every parameter; muon: the embedding, norms and "
                                  "heads).")
    optimizer: str | None = flag(None, "muon (default: Muon on the trunk's matrices, AdamW on the rest) or adamw.")
    seed: int | None = flag(None, "Training seed: batches, masks, critic fills.")
    device: str | None = flag(None, DEVICE_HELP)
    compile: bool = flag(False, "torch.compile the training step (eager, with a message, where it fails).")
    eval_interval: int | None = flag(None, "Steps between validations and checkpoints.")
    resume: bool = flag(False, "Continue the run in --out where it stopped, with its own settings; flags given "
                               "with it change them.")
    scaffold: bool = flag(False, "Train on answers in the schema-scaffold layout (only value slots masked).")
    stage: str = flag("generator", "generator: the diffusion model and token critic; value: the sequence-level "
                                   "value head (higher = more likely right) on pairs from --samples.")
    samples: Path | None = flag(None, "--stage value: a cdt calibrate scores file (--samples-per-prompt K).")
    init: Path | None = flag(None, "--stage value: the checkpoint (or run directory) to start from.")
    loss: str | None = flag(None, "--stage value: pairwise (default) or pointwise (BCE baseline).")
    # two plain flags, not a --freeze-trunk/--train-trunk pair: a pair takes a --help column of its own
    freeze_trunk: bool = flag(False, "--stage value: train the value head alone (default).")
    train_trunk: bool = flag(False, "--backbone hf:PATH, --stage value: train the trunk too (default: frozen).")
    value_dropout: float | None = flag(None, "--stage value: dropout in the head.")

    def __post_init__(self):
        if self.stage == "critic":  # the value stage's old name
            deprecated("--stage critic", "--stage value")
            self.stage = "value"

    def validate(self) -> None:
        check_finite(self)
        _choice("stage", self.stage, ("generator", "value"))
        if self.device is not None:
            check_device(self.device)
        if self.seed is not None:
            check_seed(self.seed)
        if self.freeze_trunk and self.train_trunk:
            raise UsageError("give at most one of --freeze-trunk and --train-trunk")
        other = (("optimizer", "data", "tokenizer", "backbone", "trust_remote_code", "compile", "scaffold", "resume")
                 if self.stage == "value" else ("samples", "init", "loss", "freeze_trunk", "value_dropout"))
        misplaced = ["--" + k.replace("_", "-") for k in other if getattr(self, k) not in (None, False)]
        if misplaced:  # a flag of the other stage is refused, not silently dropped
            raise UsageError(f"{', '.join(misplaced)}: not used by --stage {self.stage}; "
                             f"{'leave it out' if len(misplaced) == 1 else 'leave them out'}")
        if self.resume and self.out is None:
            raise UsageError("--resume needs --out DIR, the run directory to continue")

    def overrides(self) -> dict:
        """The flags as config values, {section: {key: value}} (None: not given)."""
        if self.stage == "value":
            trunk = True if self.freeze_trunk else False if self.train_trunk else None
            return {"value_stage": {"samples": self.samples and str(self.samples), "init": self.init and str(self.init),
                                    "loss": self.loss, "freeze_trunk": trunk, "lr": self.lr,
                                    "max_iters": self.max_iters, "batch_size": self.batch_size, "seed": self.seed,
                                    "eval_interval": self.eval_interval},
                    "model": {"value_dropout": self.value_dropout}, "train": {"device": self.device}}
        return {"data": {"source": self.data, "scaffold": self.scaffold or None, "tokenizer": self.tokenizer},
                "model": {"backbone": self.backbone, "train_trunk": self.train_trunk or None,
                          "trust_remote_code": self.trust_remote_code or None},
                "train": {"max_iters": self.max_iters, "batch_size": self.batch_size, "lr": self.lr,
                          "optimizer": self.optimizer, "seed": self.seed, "device": self.device,
                          "eval_interval": self.eval_interval, "compile": self.compile or None}}
