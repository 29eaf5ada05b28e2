"""Rich renderables: what each command shows on a terminal, and its progress displays.
Diagnostics go to stderr, results to stdout; nothing here computes a result."""

from __future__ import annotations

from rich import box
from rich.color import Color
from rich.console import Console, Group
from rich.style import Style
from rich.table import Table
from rich.text import Text

from cdt.vocab import MASK_ID, NULL_ID, PAD_ID


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x, fmt=".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _graded(region: str) -> str:
    """What the validation figures grade: the answers, or every character of plain-text rows."""
    return "answer" if region == "answer" else "masked"


def eval_line(r: dict, region: str = "answer") -> str:
    return (f"step {r['step']}: val bpc {_num(r['val_bpc'])} · {_graded(region)} acc {_pct(r['masked_acc'])}"
            + (f" · value acc {_pct(r['value_acc'])}" if r.get("value_acc") is not None else "")
            + (f" · critic AUROC {_num(r.get('critic_auroc'))} (masked only {_num(r.get('critic_auroc_masked'))})"
               if "critic_auroc" in r else ""))


def train_summary(result, ema: float = 0.0) -> Text:
    """The final summary of `cdt train` (stdout): plain lines, so paths and commands copy whole.
    `ema`: the decay of the weights' moving average the figures describe (0: the raw weights)."""
    state = f"stopped by {result.interrupted}" if result.interrupted else "finished"
    rows = [("checkpoint", str(result.checkpoint)),
            ("steps", f"{result.step} / {result.max_iters} ({state})"
             + (f", resumed from {result.resumed_from}" if result.resumed_from else "")),
            ("time", f"{result.elapsed_s:.0f} s · {result.tokens_per_s:,.0f} tokens/s")]
    if ema > 0:
        rows.append(("weights", f"moving average, decay {ema:g} (train.ema): the figures below and every later "
                                "command use it"))
    e = result.final_eval
    if e:
        unit = "token" if "val_bits_per_token" in e else "character"  # a subword tokenizer grades tokens
        rows.append(("generator", f"validation bits/char {_num(e['val_bpc'])}"
                                  + (f" ({_num(e['val_bits_per_token'])} per token)" if unit == "token" else "")
                                  + f" · {_graded(result.mask_region)}-{unit} accuracy {_pct(e['masked_acc'])} "
                                  "(t ~ U(0,1))"
                                  + (f" · values restored {_pct(e['value_acc'])} (one masked at a time)"
                                     if e.get("value_acc") is not None else "")))
        if "critic_auroc" in e:
            where = "answer positions" if result.mask_region == "answer" else "every position"
            rows.append(("critic", f"AUROC {_num(e['critic_auroc'])} on {where}, "
                                   f"{_num(e['critic_auroc_masked'])} on filled positions only · "
                                   f"mean P(wrong) {_num(e['critic_p_wrong'])} on wrong tokens vs "
                                   f"{_num(e['critic_p_right'])} on right ones"))
        if e.get("critic_rollout_auroc") is not None or e.get("critic_rollout_ece") is not None:
            rows.append(("own fills", f"critic AUROC {_num(e['critic_rollout_auroc'])} · ECE "
                                      f"{_num(e['critic_rollout_ece'])} on its own {e['rollout_rows']}-row "
                                      f"generations ({_pct(e['rollout_error_rate'])} of their tokens wrong), as "
                                      "cdt calibrate will judge them"))
    text = Text()
    for key, value in rows:
        text.append(f"{key:>10}  ", style="bold").append(value + "\n")
    if result.next_commands:
        text.append("\nnext:\n", style="bold")
        for c in result.next_commands:
            text.append(f"  {c}\n")
    return text


def trajectory(result, vocab, plain: bool) -> Text:
    """The denoising steps of each row: masks as '_', [NULL] as '∅', positions remasked after the step highlighted."""
    start, end = result.region
    text = Text()
    for i in range(len(result.texts)):
        text.append(f"row {i}\n", style="bold")
        for rec in result.generation.steps:
            text.append(f"  step {rec.step:>3}  ")
            for pos in range(start, end):
                tok = int(rec.filled[i, pos])
                ch = "∅" if tok == NULL_ID else glyph(vocab, tok) or " "
                remasked = bool(rec.remasked[i, pos])
                if plain:
                    text.append("_" if remasked else ch)
                else:
                    text.append(ch, style="reverse red" if remasked else "")
            text.append("\n")
    return text


def eval_table(rows, n: int, masking: str = "answer", ratio: float = 0.0, tail: int = 0, blocks: int = 1,
               cut: str = "") -> Table:
    """Policies x steps, ordered by trunk passes so equal-cost rows stand together; `cut` says how far an
    interrupted run got."""
    region = "answers" if masking == "answer" else f"{masking} regions ({ratio:.0%} masked)"
    region += f" (each + 0-{tail} [NULL])" if tail and masking == "answer" else ""
    region += f" in {blocks} left-to-right blocks" if blocks > 1 else ""
    # no vertical rules and fixed minimum widths: 80 columns hold every cell unabridged
    table = Table(title=f"cdt eval · {n:,} held-out {region} infilled", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, padding=(0, 0, 0, 1), caption=cut or None, caption_justify="left")
    width = max(len(r.policy) for r in rows)
    graded = rows[0].json_valid is not None
    subword = rows[0].token_acc is not None  # a subword tokenizer: tokens and characters are both graded
    columns = ("passes", "policy", "steps") + (("token acc",) if subword else ()) + ("char acc", "exact") + (
        ("JSON ok", "fields") if graded else ()) + (
        "exact/pass", "ms/row")
    for col in columns:
        table.add_column(col, justify="left" if col == "policy" else "right", no_wrap=True,
                         min_width=width if col == "policy" else max(len(col), 5))
    best = max(r.exact for r in rows)
    for r in sorted(rows, key=lambda r: (r.row_passes, r.policy)):  # passes: what a row needed, mean over rows
        cells = [f"{r.row_passes:.1f}", r.policy, str(r.steps)] + ([_pct(r.token_acc)] if subword else []) + [
                 _pct(r.char_acc),
                 f"[bold]{_pct(r.exact)}[/bold]" if r.exact == best else _pct(r.exact)]
        cells += [_pct(r.json_valid), _pct(r.field_acc)] if graded else []
        table.add_row(*cells, f"{r.exact_per_pass:.2f}", f"{r.ms_per_row:.0f}")
    return table


def paired_table(pairs, n: int, metric: str = "exact match") -> Table:
    """A metric (exact match, JSON validity) compared row by row at equal steps or passes: which setting is
    ahead, the rows only it gets right (wins) and only the other does (losses), and whether that split could
    be chance (McNemar)."""
    table = Table(title=f"paired on the same {n:,} rows · {metric}", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, padding=(0, 0, 0, 1))
    for col in ("equal", "ahead", "behind", "wins", "losses", "points", "95% CI", "p"):
        name = col in ("ahead", "behind")  # long policy names fold; numbers are never cut
        table.add_column(col, justify="left" if name or col == "equal" else "right", no_wrap=not name,
                         overflow="fold" if name else "ellipsis")
    for p in pairs:
        table.add_row(p.equal, p.a, p.b, str(p.only_a), str(p.only_b), f"{100 * p.diff:+.1f}",
                      f"{100 * p.low:+.1f}..{100 * p.high:+.1f}", "<0.001" if p.p_value < 0.001 else f"{p.p_value:.3f}")
    return table


# calibration and thresholds


def reliability_table(report, title: str) -> Table:
    """Buckets of critic P(wrong) against the observed error rate; a calibrated critic has them equal."""
    table = Table(title=title, title_justify="left")
    for col in ("critic P(wrong)", "tokens", "mean P(wrong)", "observed error", "gap"):
        table.add_column(col, justify="right", no_wrap=True)
    for b in report.buckets:
        gap = None if not b.count else b.mean_prob - b.error_rate
        table.add_row(f"({b.lo:.3f}, {b.hi:.3f}]", f"{b.count:,}", _num(b.mean_prob), _num(b.error_rate),
                      "-" if gap is None else f"{gap:+.3f}")
    return table


def calibration_summary(result) -> Text:
    """The headline numbers of `cdt calibrate` (stdout, plain lines)."""
    t, s, iv = result.tokens, result.samples, result.intervals
    held = {"answer": "held-out prompts", "span": "held-out rows, a span of each masked",
            "random": "held-out rows, random positions masked"}.get(result.masking, "held-out rows")
    what = (f"{result.n_samples} generations ({result.policy}, {result.steps} steps) of {result.n_prompts} {held}"
            if result.mode == "generate" else f"{result.n_samples} held-out rows, one training-style step each")
    rows = [
        ("mode", f"{result.mode}: {what}"),
        ("tokens", f"{t.n:,} scored · {_pct(t.accuracy)} restored right · {t.n_wrong:,} wrong"),
        ("calibration", f"ECE {_num(t.ece)}{interval_of(iv, 'ece')} · MCE {_num(t.mce)} · Brier {_num(t.brier)}"
                        f"{interval_of(iv, 'brier')} ({t.binning} buckets)"),
        ("ranking", f"token AUROC {_num(t.auroc)}{interval_of(iv, 'auroc')} · average precision "
                    f"{_num(t.average_precision)}{interval_of(iv, 'average_precision')}"),
        ("P(wrong)", _class_line("wrong tokens", t.wrong) + "  |  " + _class_line("right tokens", t.right)),
        ("samples", f"{_pct(s['wrong'])} wrong · sample AUROC {_num(s['auroc'])}{interval_of(iv, 'sample_auroc')} · "
                    f"AP {_num(s['average_precision'])}{interval_of(iv, 'sample_average_precision')}"),
    ]
    if result.fit:
        f = result.fit
        params = (f" (T = {f['temperature']:.3f}" + (f", bias {f['bias']:+.3f}" if f.get("bias") is not None else "")
                  + ")" if f.get("temperature") else "")
        rows.append(("fit", f"{f['kind']}{params}, cross-fitted over {f['folds']} folds of held-out rows: ECE "
                            f"{_num(f['ece_before'])} -> {_num(f['ece_after'])}{interval_of(iv, 'ece_after')} · Brier "
                            f"{_num(f['brier_before'])} -> {_num(f['brier_after'])}{interval_of(iv, 'brier_after')}, "
                            "each row's tokens mapped by a map fitted without them"))
    if iv:
        rows.append(("intervals", f"{iv['level']:.0%} bootstrap, {iv['resamples']:,} resamples of held-out rows (a "
                                  "row's samples stay together)"))
    rows.append(("scores", result.scores_path))
    if result.map_path:
        rows.append(("map", f"{result.map_path} (used by --policy critic-calibrated)"))
    rows.append(("time", f"{result.seconds:.1f} s · {sum(result.passes.values()):,} batched trunk passes"))
    return _key_values(rows)


def _class_line(name: str, c: dict) -> str:
    if not c["count"]:
        return f"{name}: none"
    return f"{name} mean {c['mean']:.3f} (p10 {c['p10']:.3f}, p50 {c['p50']:.3f}, p90 {c['p90']:.3f})"


def _key_values(rows) -> Text:
    text = Text()
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        text.append(f"{key:>{width}}  ", style="bold").append(str(value) + "\n")
    return text


def interval_of(intervals: dict | None, key: str, fmt: str = ".3f") -> str:
    """' [lo–hi]' for a bootstrapped figure, '' when there is no interval."""
    iv = (intervals or {}).get(key)
    return "" if not iv else f" [{iv[0]:{fmt}}–{iv[1]:{fmt}}]"


def sweep_summary(doc: dict) -> Text:
    """The headline of a `cdt sweep-tau` report: each estimated figure with its bootstrap interval, the
    guaranteed τ beside the in-sample one, and the acceptance promise."""
    c, iv, g = doc["chosen"], doc.get("intervals"), doc.get("guarantee")
    rows = [
        ("samples", f"{doc['n']:,} · {doc['n_wrong']:,} wrong (base rate {doc['base_rate']:.3f})"),
        ("direction", f"{doc['direction']} — {doc['flag_rule']} ({doc['direction_reason']})"),
        ("ranking", f"AUROC {_num(doc['auroc'])}{interval_of(iv, 'auroc')} · average precision "
                    f"{_num(doc['average_precision'])}{interval_of(iv, 'average_precision')} · "
                    f"Cohen's d {_num(doc['cohens_d'])}"),
    ]
    if doc.get("ece") is not None:
        rows.append(("calibration", f"ECE {_num(doc['ece'])}{interval_of(iv, 'ece')} · Brier "
                                    f"{_num(doc['brier'])}{interval_of(iv, 'brier')} (score read as P(wrong))"))
    rows.append(("means", f"wrong {_num(doc['class_means']['wrong'])} · right {_num(doc['class_means']['right'])}"))
    if c:
        m = c["confusion"]
        promise = (f"recall >= {g['recall_bound']:.3f} on new samples with probability {g['confidence']}; here "
                   if g else "")
        rows.append(("chosen τ", f"{c['tau']:.6g}: {promise}precision {_num(c['precision'])}"
                                 f"{interval_of(iv, 'precision')} · recall {_num(c['recall'])}"
                                 f"{interval_of(iv, 'recall')} (target {doc['recall_target']}) · F1 {_num(c['f1'])} · "
                                 f"FPR {_num(c['fpr'])} · TP {m['tp']} FP {m['fp']} FN {m['fn']} TN {m['tn']}"))
    else:
        rows.append(("chosen τ", f"none: {g['explanation']}" if g else f"none reaches recall {doc['recall_target']}"))
    p = doc.get("in_sample")
    if g is not None:
        rows.append(("in-sample τ", "-" if p is None else
                     f"{p['tau']:.6g}: precision {_num(p['precision'])} · recall {_num(p['recall'])} — chosen on these "
                     "samples alone, no promise about new ones"))
        rows.append(("promise", f"{g['method']}; {g['units']}; assumes {g['assumes']}"))
    else:
        rows.append(("promise", "none (--confidence 0): τ was chosen on these very samples"))
    a = doc.get("acceptance")
    if a:
        if a["tau"] is None:
            rows.append(("accept", a["explanation"]))
        else:
            cov = a["coverage_interval"]
            rows.append(("accept", f"{a['accept_rule']} (τ {a['tau']:.6g}): {a['accepted']:,} of {doc['n']:,} "
                                   f"({a['coverage']:.1%}, {cov[0]:.1%}–{cov[1]:.1%}) · accuracy "
                                   f"{a['accuracy']:.3f}{interval_of(iv, 'accepted_accuracy')} here" +
                                   (f", >= {a['target']} on new samples with probability {a['confidence']}"
                                    if a["confidence"] else f" (target {a['target']}; in-sample, no promise)")))
    for key, label in (("best_f1", "best F1"), ("best_youden", "best Youden")):
        p = doc[key]
        rows.append((label, "-" if p is None else f"τ {p['tau']:.6g}: precision {_num(p['precision'])} · "
                                                 f"recall {_num(p['recall'])} · F1 {_num(p['f1'])}"))
    s = doc["sanity"]
    rows.append(("sanity", f"flagging the {'upper' if doc['direction'] == 'ge' else 'lower'} half (median "
                           f"{s['median']:.4g}) gives precision {_num(s['median_split_precision'])} vs base rate "
                           f"{s['base_rate']:.3f}"))
    if iv:
        rows.append(("intervals", f"{iv['level']:.0%} bootstrap, {iv['resamples']:,} resamples of "
                                  f"{iv['resampled']} (seed {iv['seed']})"))
    return _key_values(rows)


def sweep_table(doc: dict) -> Table:
    table = Table(title=f"sweep ({doc['candidates']:,} candidate thresholds; {len(doc['sweep'])} shown)",
                  title_justify="left")
    bounded = any("recall_bound" in p for p in doc["sweep"])
    for col in ("τ", "flagged", "precision", "recall", "recall≥" if bounded else "FPR", "F1", ""):  # FPR: in --json
        table.add_column(col, justify="right", no_wrap=True)
    for p in doc["sweep"]:
        mark = " ".join(x for x, on in (("◀ chosen", p["chosen"]), ("in-sample", p.get("in_sample") and bounded))
                        if on)
        table.add_row(f"{p['tau']:.5g}", f"{p['flagged']:,}", _num(p["precision"]), _num(p["recall"]),
                      _num(p.get("recall_bound") if bounded else p["fpr"]), _num(p["f1"]),
                      f"[bold]{mark}[/bold]" if mark else "", style="bold" if p["chosen"] else None)
    return table


def examples_table(doc: dict) -> Table | None:
    if not doc["examples"]:
        return None
    table = Table(title="examples at the chosen τ", title_justify="left")
    for col in ("quadrant", "id", "score", "text"):
        table.add_column(col, no_wrap=col != "text", overflow="ellipsis")
    for quadrant, items in doc["examples"].items():
        for ex in items:
            text = " ".join(ex.get("text", "").split())
            table.add_row(quadrant.replace("_", " "), str(ex["id"]), f"{ex['score']:.4f}",
                          text if len(text) <= 80 else text[:79] + "…")
    return table


# the explorer's frame

HELP = ("→/n next step · ←/b previous · ↓/j next sample · ↑/k previous sample · r remask {pct}% (+/- change) · "
        "c colouring · p policy · </> randomness · q quit")
SHOWN = {"\n": "⏎", "\t": "⇥"}


def glyph(vocab, tok: int) -> str:
    """One token as visible characters (one, on a character tokenizer): a newline or tab would break a row
    of the trajectory."""
    return "".join(SHOWN.get(c, c if c.isprintable() else "\ufffd") for c in vocab.decode([tok]))  # no control
    # character reaches the terminal (a byte piece of a subword tokenizer may decode to one)


def heat(v: float) -> Color:
    """0 → green, 0.5 → yellow, 1 → red."""
    v = min(1.0, max(0.0, v))
    return Color.from_rgb(int(220 * min(1.0, 2 * v)), int(190 * min(1.0, 2 * (1 - v))), 40)


def _frame_scores(ex, f):
    """Per-position colour values (None = no colour) for the explorer's current colouring."""
    m = ex.material
    if f.step == 0:
        return None
    if ex.settings.colouring == "critic" and f.critic is not None:
        return f.critic.tolist()
    if ex.settings.colouring == "confidence" and f.confidence is not None:
        return (1 - f.confidence).tolist()  # generator doubt: red = unsure
    if ex.settings.colouring == "correctness" and m.reference is not None:
        return (f.tokens != m.reference).float().tolist()
    return None


def _chars(vocab, ids) -> list[str]:
    """Each token's text as shown: a whole piece for a subword token, so its colour covers all of it."""
    return ["░" if i == MASK_ID else ("∅" if i == NULL_ID else glyph(vocab, i)) for i in ids.tolist()]


def frame_heatmap(ex, f, plain: bool, width: int = 80):
    """The row as a critic heatmap (colour) or as aligned text / decile / marker lines (plain)."""
    m = ex.material
    keep = (m.template != PAD_ID).nonzero().flatten().tolist()
    chars = _chars(ex.ckpt.vocab, f.tokens)
    scores = _frame_scores(ex, f)
    wrong = (f.tokens != m.reference) & f.judged if m.reference is not None and f.step > 0 else None
    text = Text()
    if plain:
        lines = {"text": [], "score": [], "marks": []}
        for i in keep:  # a piece of several characters: its digit and mark under its first, blanks after
            pad = " " * (len(chars[i]) - 1)
            lines["text"].append(chars[i])
            s = scores[i] if scores is not None and not m.protected[i] else None
            lines["score"].append((" " if s is None else str(min(9, int(s * 10)))) + pad)
            mark = ("x" if wrong is not None and wrong[i] else "") + ("^" if f.remask_next[i] else "")
            lines["marks"].append({"x": "x", "^": "^", "x^": "!"}.get(mark, " ") + pad)
        lines = {k: "".join(v) for k, v in lines.items()}  # cut by characters: the three lines stay aligned
        span = max(10, width - 8)
        for lo in range(0, len(lines["text"]), span):
            for name, label in (("text", "text"), ("score", ex.settings.colouring[:6]), ("marks", "marks")):
                chunk = lines[name][lo : lo + span]
                if name == "text" or chunk.strip():  # no empty score/marks lines under the prompt
                    text.append(f"{label:<7} ", style="dim").append(chunk + "\n")
        return text
    for i in keep:
        style = Style()
        if m.protected[i]:
            style = Style(dim=True)
        elif f.tokens[i] == MASK_ID:
            style = Style(color="grey50")
        elif scores is not None:
            style = Style(color="black", bgcolor=heat(scores[i]))
        if wrong is not None and wrong[i]:
            style += Style(underline=True, bold=True)
        if f.remask_next[i]:
            style += Style(reverse=True)
        text.append(chars[i], style=style)
    return text


def frame_legend(ex, plain: bool) -> Text:
    what = {"critic": "critic P(wrong)", "confidence": "generator doubt (1 - p)",
            "correctness": "correctness (red = wrong)"}[ex.settings.colouring]
    null = " · ∅ = [NULL]" if ex.ckpt.config.data.emits_null else ""  # scaffold slots and answer tails
    if plain:
        return Text(f"legend: {ex.settings.colouring} line = {what} decile (0 = 0.0-0.1 ... 9 = 0.9-1.0); "
                    f"marks: x wrong vs the reference, ^ masked again next, ! both; ░ = [MASK]{null}")
    text = Text(f"{what}  0.0 ")
    for k in range(10):
        text.append("  ", style=Style(bgcolor=heat((k + 0.5) / 10)))
    text.append(" 1.0   ")
    text.append("wrong", style=Style(underline=True, bold=True)).append(" = wrong vs the reference · ")
    text.append("remask", style=Style(reverse=True)).append(" = masked again next · ")
    text.append("prompt", style=Style(dim=True)).append(" · ░ = [MASK]" + null)
    return text


def frame_stats_table(st: dict) -> Table:
    table = Table(show_header=False, box=box.SIMPLE, pad_edge=False, title="frame", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("step", f"{st['step']} / {st['steps']}" + (" (template)" if st["step"] == 0 else "")
                  + (" · nothing left masked: done early"
                     if st.get("done") and st["step"] < st["steps"] else ""))
    table.add_row("masked", f"{st['masked_before']} entering this step · {st['remask_next']} masked again next "
                            f"· region {st['region']}")
    if "valid" in st:
        table.add_row("tokens", f"{st['valid']} judged · {st['right']} right · {st['wrong']} wrong")
        table.add_row("unmasking acc", _pct(st.get("unmasking_acc")) + " of committed tokens")
    if "auroc" in st:
        table.add_row("critic AUROC", _num(st["auroc"]))
        for key, name in (("p_wrong", "P(wrong) | wrong"), ("p_right", "P(wrong) | right")):
            d = st[key]
            table.add_row(name, "-" if not d["count"] else f"mean {d['mean']:.3f} · p10 {d['p10']:.3f} · p90 {d['p90']:.3f}")
    if not st["critic"]:
        table.add_row("critic", "absent in this checkpoint (colouring by generator confidence)")
    return table


MIN_TERMINAL = (60, 12)  # columns x lines the interactive explorer needs for a heatmap row and its key help


def frame_view(ex, plain: bool, width: int = 80, interactive: bool = False, height: int | None = None) -> Group:
    """Everything one frame shows: header, heatmap, legend, statistics, and (interactive) the key help. The
    interactive view puts the key help and any message under the header, where a short terminal keeps them,
    and in a terminal smaller than MIN_TERMINAL says so instead."""
    if interactive and (width < MIN_TERMINAL[0] or (height or MIN_TERMINAL[1]) < MIN_TERMINAL[1]):
        return Group(Text(f"terminal too small ({width}x{height}): cdt explore needs {MIN_TERMINAL[0]}x"
                          f"{MIN_TERMINAL[1]} · q quits", style="reverse"))
    f = ex.current()
    st = ex.stats(f)
    s, sampler = ex.settings, ex.settings.sampler
    done = " (done)" if st.get("done") and f.step < sampler.steps else ""
    header = Text(f"{st['label']} · step {f.step}/{sampler.steps}{done} · policy {sampler.policy} · "
                  f"randomness {sampler.randomness:g} · "
                  f"colour: {s.colouring}" + (" · mode step" if s.mode == "step" else ""), style="bold")
    notes = [Text(HELP.format(pct=s.remask_pct), style="reverse")] if interactive else []
    notes += [Text(ex.message, style="yellow")] if ex.message else []
    body = [frame_heatmap(ex, f, plain, width), frame_legend(ex, plain), frame_stats_table(st)]
    return Group(header, *notes, *body) if interactive else Group(header, *body, *notes)


def slot_trajectory(gen, starts: list[int], vocab, plain: bool) -> Text:
    """Scaffolded rows step by step after their prompts: `_` = masked, `∅` = [NULL], remasked highlighted."""
    text = Text()
    for i, start in enumerate(starts):
        text.append(f"row {i}\n", style="bold")
        for rec in gen.steps:
            text.append(f"  step {rec.step:>3}  ")
            for pos in range(start, rec.filled.shape[1]):
                tok = int(rec.filled[i, pos])
                if tok == PAD_ID:
                    break
                ch = "∅" if tok == NULL_ID else glyph(vocab, tok)
                remasked = bool(rec.remasked[i, pos])
                text.append("_" if remasked and plain else ch, style="reverse red" if remasked and not plain else "")
            text.append("\n")
    return text


def scaffold_table(rows, n: int, cut: str = "") -> Table:
    """Scaffolded infilling per policy and steps, ordered by trunk passes; fits 80 columns."""
    kept = min(r.structure for r in rows)
    title = f"cdt eval --scaffold · {n:,} held-out calls · structure kept in {_pct(kept)} of rows"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 0, 0, 1))

    def pct(x):
        return "-" if x is None else f"{100 * x:.0f}%"

    for col in ("pass", "policy", "T", "JSON", "valid", "types", "fields", "calls", "∅ P", "∅ R", "div", "rep", "s"):
        table.add_column(col, justify="left" if col == "policy" else "right", no_wrap=True)
    for r in sorted(rows, key=lambda r: (r.passes, r.policy)):
        table.add_row(f"{r.passes:.0f}", r.policy, str(r.steps), pct(r.json_valid), pct(r.schema_valid), pct(r.type_valid),
                      pct(r.field_exact), pct(r.call_exact), pct(r.null_precision), pct(r.null_recall),
                      f"{r.diversity:.2f}", pct(r.repetition), f"{r.seconds:.0f}")
    table.caption = ("JSON/valid: calls that parse / that validate against the schema · ∅ P/R: [NULL] "
                     "precision/recall over slot positions · div: distinct/total characters per "
                     "value · rep: characters repeating the previous one" + (f"\n{cut}" if cut else ""))
    table.caption_justify = "left"
    return table


# the critic stage (value head)


def stage_line(r: dict) -> str:
    t, v = r["train"], r["val"]
    return (f"step {r['step']}: pairwise acc train {_pct(t['pairwise_acc'])} · validation {_pct(v['pairwise_acc'])} · "
            f"gap {_num(r['gap'])} · value right/wrong (val) {_num(v['value_right'])} / {_num(v['value_wrong'])}")


def stage_summary(result, out) -> Text:
    d, e = result.data, result.final_eval
    rows = [
        ("checkpoint", result.checkpoint),
        ("data", f"{d['samples']} samples · groups {d['groups']['train']} train / {d['groups']['val']} validation "
                 f"(overlap {d['overlap']}) · with both labels {d['mixed_groups']['train']} / {d['mixed_groups']['val']} "
                 f"· pairs {d['pairs']['train']} / {d['pairs']['val']}"),
        ("training", (f"{result.steps} of {result.max_iters} steps (stopped by {result.interrupted})"
                      if result.interrupted else f"{result.steps} steps")
                     + f" · {result.loss} loss · trunk {'frozen' if result.freeze_trunk else 'trained'} "
                     f"· {result.elapsed_s:.0f} s"),
    ]
    if e:
        rows.append(("value head", stage_line(e) + " (higher value = more likely right)"))
    rows.append(("next", f"cdt calibrate --checkpoint {out} --score-source value-head"))
    return _key_values(rows)


# what each command prints on stdout (plain lines stay whole: soft wrap, so paths and commands copy)


def show_eval(console: Console, report) -> None:
    """`cdt eval`: the table of settings, the paired comparisons, where the rows went."""
    s = report.settings
    if s.scaffold:
        console.print(scaffold_table(report.rows, s.n, report.cut))
        return
    console.print(eval_table(report.rows, s.n, report.masking, s.mask_ratio, report.answer_tail,
                             report.settings.sampler.blocks, report.cut))
    if report.pairs:
        console.print(paired_table(report.pairs, s.n))
    if report.pairs_json:
        console.print(paired_table(report.pairs_json, s.n, "JSON valid"))
    if report.rows_file is not None:
        console.print(f"per-row outcomes: {report.rows_file}", highlight=False, soft_wrap=True)


def show_calibration(console: Console, result) -> None:
    """`cdt calibrate`: the reliability table, the headline numbers, the files and the next command."""
    console.print(reliability_table(result.tokens, f"critic reliability · {result.tokens.n:,} generated tokens"))
    console.print(calibration_summary(result), soft_wrap=True, end="")
    console.print(f"{'report':>11}  {result.report_path}" + (f"\n{'plot':>11}  {result.plot}" if result.plot else ""),
                  soft_wrap=True, highlight=False)
    console.print(f"\nnext:\n  cdt sweep-tau {result.scores_path} --recall-target 0.9", soft_wrap=True,
                  highlight=False)


def show_sweep(console: Console, report) -> None:
    """`cdt sweep-tau`: the headline, the sweep, examples at the chosen τ, the report's path."""
    console.print(sweep_summary(report.doc), soft_wrap=True, end="")
    console.print(sweep_table(report.doc))
    ex = examples_table(report.doc)
    if ex is not None:
        console.print(ex)
    console.print(f"report: {report.path}", soft_wrap=True, highlight=False)


def one_line(text: str) -> str:
    """A generated row on one line of output: a newline it holds as \\n, a tab as \\t, a backslash as \\\\."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def show_bench(console: Console, report) -> None:
    """`cdt bench bfcl`: per category accuracy, parse and validity rates, cost; accuracy by argument type."""
    table = Table(title="BFCL · AST accuracy of one scaffolded call per request", title_justify="left")
    for col in ("category", "n", "accuracy", "parse", "schema-valid", "unfit", "passes", "time"):
        table.add_column(col, justify="left" if col == "category" else "right", no_wrap=col == "category")
    types: dict = {}
    for r in report.results:
        doc = r.to_json()
        table.add_row(r.category, f"{r.n:,}", f"{doc['accuracy']:.1%}", f"{doc['parse_rate']:.1%}",
                      f"{doc['valid_rate']:.1%}", f"{r.unfit:,}", f"{r.passes:.0f}", f"{r.seconds:.0f} s")
        for t, v in doc["by_type"].items():
            types.setdefault(t, {})[r.category] = v
    console.print(table)
    if types:
        by_type = Table(title="argument accuracy by declared type (right function, value accepted)",
                        title_justify="left")
        by_type.add_column("type")
        for r in report.results:
            by_type.add_column(r.category, justify="right")
        for t, cells in sorted(types.items()):
            by_type.add_row(t, *(f"{cells[r.category]['accuracy']:.1%} of {cells[r.category]['n']}"
                                 if r.category in cells else "" for r in report.results))
        console.print(by_type)
    if report.rows_file:
        console.print(f"per-call outcomes: {report.rows_file}\n\nnext:\n  cdt sweep-tau {report.rows_file} "
                      "--recall-target 0.9   # a threshold on the critic's score of a call", soft_wrap=True,
                      highlight=False)


def show_export(console: Console, result) -> None:
    """`cdt export`: what was written where, and the line that loads it."""
    console.print(f"exported {result.checkpoint} ({result.trunk} trunk) to {result.out}: {', '.join(result.files)}\n"
                  f"load: {result.load}", soft_wrap=True)
