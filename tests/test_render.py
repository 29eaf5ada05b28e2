import io

from rich.console import Console

from cdt.progress import TrainProgress
from cdt.render import eval_line


START = {"run_dir": "r", "device": "cpu", "params": 1e6, "start": 0, "max_iters": 10, "region": "answer",
         "data": {"train": 9, "val": 1, "overlap": 0}}


def test_progress_off_a_terminal_is_plain_lines_at_most_every_interval_and_a_bar_on_one(monkeypatch):
    import cdt.progress as progress

    plain = io.StringIO()
    p = TrainProgress(Console(file=plain, force_terminal=False, width=200))
    p.on_start(START)
    p.on_log({"step": 5, "loss": 1.0, "lr": 1e-3, "tokens_per_s": 100.0})  # within the interval: no line
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    p.on_log({"step": 6, "loss": 0.9, "lr": 1e-3, "tokens_per_s": 100.0})
    p.on_eval({"step": 6, "val_bpc": 2.5, "masked_acc": 0.5, "critic_auroc": 0.9, "critic_auroc_masked": 0.95})
    p.on_log({"step": 10, "loss": 0.8, "lr": 1e-3, "tokens_per_s": 100.0})
    p.on_log({"step": 10, "loss": 0.8, "lr": 1e-3, "tokens_per_s": 100.0})  # done: said once
    lines = plain.getvalue().splitlines()
    assert lines[0].startswith("run r · cpu · 1.00M parameters") and "\x1b" not in plain.getvalue()
    assert [ln.split(" · ")[0] for ln in lines[1:]] == ["train 6/10 (60%)", "step 6: val bpc 2.500", "train 10/10 (100%)"]
    assert "loss 0.900" in lines[1] and "left" in lines[1] and "left" not in lines[3]

    loud = io.StringIO()
    p = TrainProgress(Console(file=loud, force_terminal=True, color_system=None, width=120))
    p.on_start(START)
    p.on_log({"step": 5, "loss": 1.0, "lr": 1e-3, "tokens_per_s": 100.0})
    p.on_eval({"step": 5, "val_bpc": 2.5, "masked_acc": 0.5, "critic_auroc": 0.9, "critic_auroc_masked": 0.95})
    p.progress.stop()
    text = loud.getvalue()
    assert "overlap 0" in text and "answer acc 50.0%" in text and "critic AUROC 0.900" in text


def test_eval_line_names_what_was_graded():
    r = {"step": 500, "val_bpc": 0.27, "masked_acc": 0.9, "critic_auroc": 0.5, "critic_auroc_masked": 0.5}
    assert "answer acc 90.0%" in eval_line(r) and "answer acc" in eval_line(r, "answer")
    assert "masked acc 90.0%" in eval_line(r, "all") and "answer" not in eval_line(r, "all")
