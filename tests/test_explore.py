"""`cdt explore`: the shared path (same numbers as calibrate), rendering, keys, and a real terminal."""

import json
import os
import re
import select
import sys

import pytest
from rich.console import Console

from cdt.calibrate import calibrate, sample_scores
from cdt.checkpoint import load
from cdt.explore import Explorer, load_materials
from cdt.render import frame_view
from cdt.terminal import split_keys
from cdt.vocab import MASK_ID
from cdt.settings import CalibrateSettings, ExploreSettings, from_flags

from tests.helpers import assert_one_line_error, cli


def explorer(run, rows=3, **kw):
    ckpt = load(run)
    materials = load_materials(ckpt, None, 0, rows, None, 0.3, 0)
    return Explorer(ckpt, materials, from_flags(ExploreSettings, **{"steps": 4, **kw}))


def test_step_frame_equals_calibrate_step_mode(tiny_run, tmp_path):
    ex = explorer(tiny_run, mode="step")
    st = ex.stats()
    settings = from_flags(CalibrateSettings, n_samples=1, mode="step", seed=0)
    report = calibrate(load(tiny_run), settings, tmp_path / "s.jsonl", None)
    t = report.tokens
    assert (st["valid"], st["wrong"]) == (t.n, t.n_wrong) and st["valid"] > 0
    assert not st["done"]  # one training-style step, not a sampler that stopped
    assert st["p_wrong"]["mean"] == pytest.approx(t.wrong["mean"])
    assert st["p_right"]["mean"] == pytest.approx(t.right["mean"])
    # calibrate ranks through a 2^16-bin histogram (ties within 1/65536); the frame's AUROC is exact
    assert st["auroc"] == pytest.approx(t.auroc, abs=0.01)
    line = json.loads((tmp_path / "s.jsonl").read_text())
    f = ex.current()
    assert sample_scores(f.critic[f.judged].double().numpy(), 5) == pytest.approx(
        {k: line[k] for k in ("score", "score_max", "score_mean")})


@pytest.mark.parametrize("sampler", [{}, {"temperature": 0.0, "spread": True}])
def test_final_frame_is_calibrates_generation(tiny_run, tmp_path, sampler):
    ex = explorer(tiny_run, rows=2, **sampler)
    ex.move_sample(1)
    settings = from_flags(CalibrateSettings, n_samples=2, steps=4, seed=0, **sampler)
    calibrate(load(tiny_run), settings, tmp_path / "s.jsonl", None)
    line = json.loads((tmp_path / "s.jsonl").read_text().splitlines()[1])
    final = ex.frames[-1]
    region = ~ex.material.protected
    where = region.nonzero().flatten()
    assert ex.ckpt.vocab.decode(final.tokens[int(where.min()) : int(where.max()) + 1]) == line["text"]
    assert ex.stats()["step"] == 0 and len(ex.frames) == 5  # template + 4 steps
    assert [ex.stats(f)["done"] for f in ex.frames] == [False] * 4 + [True]
    assert not (final.tokens == MASK_ID).any() and not final.remask_next.any()


def test_keys_move_colour_policy_and_remask(tiny_run):
    ex = explorer(tiny_run)
    ex.handle("prev")
    assert ex.frame == 0
    for _ in range(10):
        ex.handle("next")
    assert ex.frame == 4
    ex.handle("colour")
    assert ex.settings.colouring == "confidence"
    ex.handle("colour"), ex.handle("colour")
    assert ex.settings.colouring == "critic"
    ex.frame = 2
    ex.handle("remask")
    assert ex.frame == 3 and "remasked" in ex.message
    k = round(0.3 * int((~ex.material.protected).sum()))
    assert int(ex.current().masked_before.sum()) == k  # exactly the remasked share enters the next step
    ex.handle("policy")
    assert ex.settings.sampler.policy == "critic-1pass" and ex.frame <= len(ex.frames) - 1
    ex.handle("rand_up")
    assert ex.settings.sampler.randomness == 0.1
    ex.handle("next_sample")
    assert ex.sample == 1 and ex.frame == 0
    assert ex.handle("quit") is False


def test_critic_calibrated_uses_the_map_and_says_when_it_is_missing(tiny_run, tmp_path):
    from cdt import calibration_map
    from cdt.sampling.loop import generate
    from cdt.settings import SampleConfig

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes((tiny_run / "checkpoint.pt").read_bytes())
    bare = explorer(run_dir, policy="critic-calibrated")
    assert "no calibration map" in bare.message
    # a map that reverses the critic's order: with it the policy remasks what the critic trusts most
    reverse = calibration_map.CalibrationMap("buckets", [0.0, 1.0], [1.0, 0.0],
                                             info={"sampler": {"steps": 4, "temperature": 1.0}})
    calibration_map.save(run_dir, reverse)
    ex = explorer(run_dir, policy="critic-calibrated")
    assert ex.message == ""  # measured with this sampler
    m = ex.material
    gen = generate(ex.model, m.template[None], m.protected[None], SampleConfig(steps=4, policy="critic-calibrated"),
                   row_seeds=[ex.row_seed()], record=True, calibration=reverse)
    assert [f.remask_next.tolist() for f in ex.frames[1:]] == [r.remasked[0].tolist() for r in gen.steps]
    assert [f.remask_next.tolist() for f in ex.frames] != [f.remask_next.tolist() for f in bare.frames]
    greedy = explorer(run_dir, policy="critic-calibrated", temperature=0.0)
    assert "another sampler: temperature 1.0 (now 0.0)" in greedy.message


def render(ex, plain, width=100, interactive=None, height=None):
    console = Console(record=True, width=width, force_terminal=not plain, color_system=None if plain else "truecolor")
    interactive = not plain if interactive is None else interactive
    console.print(frame_view(ex, plain=plain, width=width, interactive=interactive, height=height))
    return console.export_text(styles=not plain)


def test_rendered_frame_has_legend_stats_and_markers(tiny_run):
    ex = explorer(tiny_run)
    ex.frame = 1
    coloured = render(ex, plain=False)
    assert "critic P(wrong)" in coloured and "critic AUROC" in coloured and "q quit" in coloured
    assert "\x1b[4" in coloured or ";4m" in coloured  # underlined wrong tokens
    assert "\x1b[7" in coloured or ";7m" in coloured  # reversed: masked again next
    plain = render(ex, plain=True)
    assert "legend:" in plain and "P(wrong) | wrong" in plain
    marks = "".join(line[8:] for line in plain.splitlines() if line.startswith("marks"))
    f = ex.current()
    keep = ~ex.material.protected & (ex.material.template != 1)
    wrong = (f.tokens != ex.material.reference)[keep]
    assert marks.count("x") + marks.count("!") == int(wrong.sum())
    assert marks.count("^") + marks.count("!") == int(f.remask_next[keep].sum())


def test_narrow_terminal_wraps_and_a_small_one_is_named_in_interactive_mode(tiny_run):
    ex = explorer(tiny_run)
    ex.frame = 2
    for plain in (True, False):
        assert "step" in render(ex, plain=plain, width=24, interactive=False)
    assert "terminal too small (30x8): cdt explore needs 60x12 · q quits" in " ".join(
        render(ex, plain=True, width=30, interactive=True, height=8).split())
    big = render(ex, plain=True, width=80, interactive=True, height=24)
    assert big.index("q quit") < big.index("legend:")  # the key help above the heatmap: a short terminal keeps it


def test_cli_non_interactive_and_json(tiny_run):
    r = cli("explore", "--checkpoint", str(tiny_run), "--steps", "3", "--final-only")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.count("step 3/3") == 1 and "step 1/3" not in r.stdout and "legend:" in r.stdout
    j = cli("explore", "--checkpoint", str(tiny_run), "--steps", "3", "--json", "--masking", "span")
    doc = json.loads(j.stdout)
    assert [f["step"] for f in doc["frames"]] == [0, 1, 2, 3] and "span" in doc["label"]
    assert all("auroc" in f for f in doc["frames"][1:])
    g = cli("explore", "--checkpoint", str(tiny_run), "--steps", "3", "--json", "--temperature", "0",
            "--spread")
    assert g.exit_code == 0, g.stderr
    assert json.loads(g.stdout)["settings"] | {"temperature": 0.0, "spread": True} == json.loads(g.stdout)["settings"]
    early = cli("explore", "--checkpoint", str(tiny_run), "--steps", "8", "--json", "--schedule",
                "power:4")
    doc = json.loads(early.stdout)  # (1 - s/8)^4 of any region under 4,096 positions is below 1 by step 7
    assert doc["settings"]["schedule"] == "power:4" and 1 < doc["frames"][-1]["step"] < 8
    assert doc["frames"][-1]["masked_before"] > 0 and doc["frames"][-1]["remask_next"] == 0
    assert doc["frames"][-1]["done"] and not any(f["done"] for f in doc["frames"][:-1])
    last = doc["frames"][-1]["step"]
    shown = cli("explore", "--checkpoint", str(tiny_run), "--steps", "8", "--final-only",
                "--schedule", "power:4")
    assert f"step {last}/8 (done)" in shown.stdout and "nothing left masked: done early" in shown.stdout
    full = cli("explore", "--checkpoint", str(tiny_run), "--steps", "3", "--final-only")
    assert "(done)" not in full.stdout and "done early" not in full.stdout  # the last of its steps: nothing early
    bad = cli("explore", "--checkpoint", str(tiny_run), "--schedule", "power:x")
    assert bad.exit_code == 2 and "unknown schedule 'power:x'" in bad.stderr
    fallback = cli("explore", "--checkpoint", str(tiny_run), "--steps", "2", "--interactive")
    assert fallback.exit_code == 0 and "falling back to --no-interactive" in fallback.stderr


def test_checkpoint_without_critic_still_explores(tmp_path):
    from cdt.train import train
    from tests.helpers import tiny_config

    cfg = tiny_config(max_iters=2, eval_interval=2)
    cfg.model.critic = "none"
    train(cfg, tmp_path / "nocritic")
    r = cli("explore", "--checkpoint", str(tmp_path / "nocritic"), "--steps", "2", "--final-only")
    assert r.exit_code == 0, r.stderr
    assert "absent in this checkpoint" in r.stdout and "policy confidence" in r.stdout


def test_bad_input(tiny_run):
    both = cli("explore", "--checkpoint", "no/such/run", "--interactive", "--no-interactive")
    assert_one_line_error(both, 2, "give at most one of --interactive and --no-interactive")
    assert_one_line_error(cli("explore", "--checkpoint", str(tiny_run), "--prompt", "snow ☃"), 1, "'☃'")
    assert_one_line_error(cli("explore", "--checkpoint", str(tiny_run), "--colour", "rainbow"), 2,
                          "unknown colouring")
    assert_one_line_error(cli("explore", "--checkpoint", str(tiny_run), "--mode", "dream"), 2,
                          "unknown mode")


def test_index_near_and_past_the_end_of_the_split(tiny_run):
    from cdt.checkpoint import load
    from cdt.sampling.heldout import load_heldout

    size = len(load_heldout(load(tiny_run), 10_000, clip=True))
    last = cli("explore", "--checkpoint", str(tiny_run), "--index", str(size - 1), "--rows", "32",
               "--steps", "2", "--final-only")
    assert last.exit_code == 0, last.stderr  # fewer than --rows rows remain: browse those
    assert f"held-out row {size - 1} " in last.stdout
    assert_one_line_error(cli("explore", "--checkpoint", str(tiny_run), "--index", str(size)), 2,
                          f"--index {size} is past the validation split: it has {size} rows (0-{size - 1})")


def test_split_keys():
    assert split_keys("n\x1b[Cq") == ["n", "\x1b[C", "q"]
    assert split_keys("\x1b") == ["\x1b"]


class PseudoTerminal:
    """`cdt ARGS` on a pseudo-terminal of `lines` x `columns`; `read_until` waits for text on the screen."""

    def __init__(self, args, lines=40, columns=100, env=None):
        import fcntl
        import pty
        import struct
        import termios

        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: cdt on a terminal
            os.environ.update(TERM="xterm-256color", COLUMNS=str(columns), LINES=str(lines), **(env or {}))
            os.execv(sys.executable, [sys.executable, "-m", "cdt", *map(str, args)])
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        self.screen = b""

    def text(self) -> str:
        return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", self.screen.decode("utf-8", "replace"))

    def read_until(self, fragment: str, timeout: float = 60.0, pattern: str | None = None) -> str:
        """The screen once it shows `fragment` (and, given, a line matching regular expression `pattern`)."""
        for _ in range(int(timeout / 0.2)):  # polls of at most 0.2 s each
            if fragment in self.text() and (pattern is None or re.search(pattern, self.text(), re.M)):
                return self.text()
            if select.select([self.fd], [], [], 0.2)[0]:
                try:
                    self.screen += os.read(self.fd, 65536)
                except OSError:
                    break
        raise AssertionError(f"{fragment!r} never appeared on the screen")

    def quit(self) -> int:
        """Press q, read until the child closes the terminal, and return its exit code."""
        os.write(self.fd, b"q")
        for _ in range(300):  # polls of at most 0.2 s
            if select.select([self.fd], [], [], 0.2)[0]:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                self.screen += chunk
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pseudo-terminal test uses Linux pty")


@linux_only
def test_interactive_mode_in_a_pseudo_terminal(tiny_run):
    term = PseudoTerminal(["explore", "--checkpoint", tiny_run, "--steps", "3"])
    term.read_until("step 0/3")
    os.write(term.fd, b"\x1b[C")  # right arrow: next step
    term.read_until("step 1/3")
    os.write(term.fd, b"c")  # colouring: confidence
    term.read_until("colour: confidence")
    assert term.quit() == 0
    assert "q quit" in term.text()  # the help line was shown
    assert b"\x1b[?1049l" in term.screen  # left the alternate screen: the terminal is restored


@pytest.mark.slow  # a process of its own; frame_view's plain mode is tested in-process
@linux_only
def test_interactive_mode_without_colour_keeps_the_heatmap_as_deciles_and_warns_of_a_missing_map(tiny_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes((tiny_run / "checkpoint.pt").read_bytes())  # no calibration map here
    term = PseudoTerminal(["explore", "--checkpoint", run, "--steps", "3"], env={"NO_COLOR": "1"})
    term.read_until("step 0/3")
    os.write(term.fd, b"n")
    term.read_until("step 1/3", pattern=r"^critic +[0-9 ]*[0-9]")  # the decile line carries the critic's heatmap
    os.write(term.fd, b"p")  # policy: critic -> critic-1pass
    term.read_until("critic-1pass")
    os.write(term.fd, b"p")  # policy: critic-1pass -> critic-calibrated
    term.read_until("no calibration map in")
    assert term.quit() == 0


@pytest.mark.slow  # a process of its own; frame_view's own test checks the same in-process
@linux_only
def test_interactive_mode_in_a_small_terminal_says_so(tiny_run):
    term = PseudoTerminal(["explore", "--checkpoint", tiny_run, "--steps", "3"], lines=8, columns=30)
    assert "needs 60x12" in " ".join(term.read_until("too small").split())
    assert term.quit() == 0
