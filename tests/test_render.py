import io

from rich.console import Console

from cdt.render import TrainProgress, eval_line


def test_progress_is_silent_off_a_terminal_and_shows_evals_on_one():
    quiet = io.StringIO()
    p = TrainProgress(Console(file=quiet, force_terminal=False))
    p.on_start({"run_dir": "r", "device": "cpu", "params": 1e6, "start": 0, "max_iters": 10, "region": "answer",
                "data": {"train": 9, "val": 1, "overlap": 0}})
    p.on_log({"step": 5, "loss": 1.0, "lr": 1e-3, "tokens_per_s": 100.0})
    assert quiet.getvalue() == ""

    loud = io.StringIO()
    p = TrainProgress(Console(file=loud, force_terminal=True, color_system=None, width=120))
    p.on_start({"run_dir": "r", "device": "cpu", "params": 1e6, "start": 0, "max_iters": 10, "region": "answer",
                "data": {"train": 9, "val": 1, "overlap": 0}})
    p.on_log({"step": 5, "loss": 1.0, "lr": 1e-3, "tokens_per_s": 100.0})
    p.on_eval({"step": 5, "val_bpc": 2.5, "masked_acc": 0.5, "critic_auroc": 0.9, "critic_auroc_masked": 0.95})
    p.progress.stop()
    text = loud.getvalue()
    assert "overlap 0" in text and "answer acc 50.0%" in text and "critic AUROC 0.900" in text


def test_eval_line_names_what_was_graded():
    r = {"step": 500, "val_bpc": 0.27, "masked_acc": 0.9, "critic_auroc": 0.5, "critic_auroc_masked": 0.5}
    assert "answer acc 90.0%" in eval_line(r) and "answer acc" in eval_line(r, "answer")
    assert "masked acc 90.0%" in eval_line(r, "all") and "answer" not in eval_line(r, "all")
