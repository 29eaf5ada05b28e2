"""`--backbone hf:PATH` and `cdt export --format hf`, on tiny random transformers models built here."""

import json
import shutil
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from cdt import checkpoint  # noqa: E402
from tests import hf_models  # noqa: E402
from tests.helpers import assert_one_line_error, cdt_process, cli, evals  # noqa: E402



@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "topics.txt"
    path.write_text(hf_models.topics_text(60_000), encoding="utf-8")
    return path


class _Lazy(dict):
    """family -> what `make(family)` gives, made on first use (a test that needs one family builds one)."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def __missing__(self, family):
        self[family] = self.make(family)
        return self[family]


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return _Lazy(lambda f: hf_models.build(root / f, f))


def train(backbone, text_file, out, *extra):
    result = cli("train", "--preset", "tiny", "--data", text_file, "--backbone", f"hf:{backbone}", "--out", out,
                 "--max-iters", 12, "--lr", 0.02, "--set", "train.log_interval=1", "--device", "cpu", "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def frozen_runs(backbones, text_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return _Lazy(lambda f: (root / f, train(backbones[f], text_file, root / f)))


# BERT and RoBERTa name their specials differently ([MASK] at 103-style ids, <mask> last); ModernBERT runs slow
@pytest.mark.parametrize("family", ["bert", "roberta", pytest.param("modernbert", marks=pytest.mark.slow)])
def test_a_frozen_backbone_keeps_every_weight_while_the_critic_learns(frozen_runs, backbones, family):
    out, doc = frozen_runs[family]
    saved = safetensors_torch.load_file(str(backbones[family] / "model.safetensors"))
    ck = checkpoint.load(out)
    for state in (ck.model_state, ck.train_model_state or ck.model_state):  # averaged and raw alike
        for name, weight in saved.items():
            assert torch.equal(state[f"hf.{name}"], weight), name  # bit for bit, shape included
    trained = [k for k in ck.model_state if not k.startswith("hf.")]
    assert {"critic.weight", "critic.bias", "inner_of"} <= set(trained)
    losses = [json.loads(line)["critic_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "train"]
    assert None not in losses  # the critic trains from the first step (the generator-only phase is skipped)
    assert sum(losses[-3:]) < 0.95 * sum(losses[:3])  # and learns: its loss falls (measured: by 17-81%)
    assert ck.config.train.critic_warmup_start == 0 and ck.config.model.d_model == 32
    assert 0 <= evals(out)[-1]["critic_auroc"] <= 1 and doc["final_eval"]["val_bpc"] > 0


def test_the_backbone_reads_cdt_ids_through_its_own_tokenizer(frozen_runs, backbones):
    """The generator's logits are the masked LM's own, reordered into cdt's ids ([MASK], [PAD], [NULL] first)."""
    out, _ = frozen_runs["roberta"]
    ck = checkpoint.load(out)
    model = ck.build_model()
    reference = transformers.AutoModelForMaskedLM.from_pretrained(backbones["roberta"]).eval()
    tok = transformers.AutoTokenizer.from_pretrained(backbones["roberta"])
    text = "The class statement defines"
    ids = torch.tensor([ck.vocab.encode(text)])
    inner = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    assert torch.equal(model.inner_of[ids], inner)
    assert ck.vocab.pieces[:3] == ("<mask>", "<pad>", "</s>")  # the model's own tokens serve cdt's specials
    with torch.no_grad():
        ours = model.generator_logits(model(ids), ids)
        theirs = reference(input_ids=inner).logits
    finite = torch.isfinite(ours)
    assert not finite[..., :2].any()  # [MASK] and [PAD] are never proposed
    assert torch.allclose(ours[finite], theirs[..., model.inner_of][finite], atol=1e-5)


@pytest.mark.slow  # a training run of its own
def test_train_trunk_fine_tunes_the_backbone(backbones, text_file, tmp_path):
    out = tmp_path / "tuned"
    train(backbones["bert"], text_file, out, "--train-trunk")
    saved = safetensors_torch.load_file(str(backbones["bert"] / "model.safetensors"))
    state = checkpoint.load(out).model_state
    assert any(not torch.equal(state[f"hf.{k}"], v) for k, v in saved.items())


def test_sample_eval_and_calibrate_run_on_a_backbone(frozen_runs, tmp_path):
    out, _ = frozen_runs["bert"]
    s = cli("sample", "--checkpoint", out, "--prompt", "the class", "--length", 8, "--n", 2, "--steps", 4,
            "--policy", "critic", "--json")
    assert s.exit_code == 0, s.output
    assert len(json.loads(s.stdout)["samples"]) == 2
    e = cli("eval", "--checkpoint", out, "--n", 4, "--steps", 4, "--policies", "critic-1pass", "--json")
    assert e.exit_code == 0, e.output
    assert [r["policy"] for r in json.loads(e.stdout)["rows"]] == ["critic-1pass"]
    c = cli("calibrate", "--checkpoint", out, "--n-samples", 4, "--out", tmp_path / "s.jsonl", "--json")
    assert c.exit_code == 0, c.output
    assert json.loads(c.stdout)["tokens"]["n"] > 0


def test_an_exported_backbone_loads_in_transformers_as_itself(frozen_runs, tmp_path):
    out, _ = frozen_runs["bert"]
    dest = tmp_path / "export"
    r = cli("export", dest, "--checkpoint", out, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["trunk"] == "bert" and {"model.safetensors", "cdt_heads.safetensors", "tokenizer.json"} <= set(doc["files"])
    ck = checkpoint.load(out)
    model = ck.build_model()
    loaded = transformers.AutoModelForMaskedLM.from_pretrained(dest).eval()
    tok = transformers.AutoTokenizer.from_pretrained(dest)
    inner = torch.tensor([tok("the class statement", add_special_tokens=False)["input_ids"]])
    ids = torch.tensor([ck.vocab.encode("the class statement")])
    with torch.no_grad():
        h = model(ids)
        assert torch.allclose(loaded(input_ids=inner).logits[..., model.inner_of][..., 2:],
                              model.generator_logits(h, ids)[..., 2:], atol=1e-5)
        heads = safetensors_torch.load_file(str(dest / "cdt_heads.safetensors"))
        state = loaded(input_ids=inner, output_hidden_states=True).hidden_states[-1]
        critic = state @ heads["critic.weight"].t() + heads["critic.bias"]
        assert torch.allclose(critic.squeeze(-1), model.critic_logits(h), atol=1e-5)
    card = json.loads((dest / "cdt.json").read_text())
    assert "higher logit = more likely wrong" in card["critic"]["polarity"]


def test_a_run_on_cdts_own_trunk_exports_and_loads_with_its_code(tiny_run, tmp_path):
    dest = tmp_path / "own"
    r = cdt_process("export", dest, "--checkpoint", tiny_run)  # once as a real process
    assert r.returncode == 0, r.stderr
    assert "trust_remote_code=True" in r.stdout
    ck = checkpoint.load(tiny_run)
    model = ck.build_model()
    loaded = transformers.AutoModelForMaskedLM.from_pretrained(dest, trust_remote_code=True).eval()
    tok = transformers.AutoTokenizer.from_pretrained(dest, trust_remote_code=True)
    text = 'weather {"city": "Oslo"}'
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == ck.vocab.encode(text) and tok.decode(ids) == text  # one token per character, same ids
    x = torch.tensor([ids])
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=x).logits, model.generator_logits(model(x), x))


def test_an_own_trunk_run_on_a_renumbered_tokenizer_exports_in_the_tokenizers_ids(text_file, tmp_path):
    """A tokenizer.json with [PAD] at 0 and the mask token at 4 (as BERT's): cdt reads it renumbered, and
    the exported model reads and writes the file's own ids."""
    from tests.test_tokenizer import _wordpiece_file

    (tmp_path / "tok").mkdir()
    _wordpiece_file(tmp_path / "tok")
    r = cli("train", "--preset", "tiny", "--data", text_file, "--tokenizer", tmp_path / "tok", "--max-iters", 3,
            "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    ck = checkpoint.load(tmp_path / "run")
    assert (ck.vocab.inner_of != range(len(ck.vocab))).any()
    dest = tmp_path / "export"
    assert cli("export", dest, "--checkpoint", tmp_path / "run").exit_code == 0
    loaded = transformers.AutoModelForMaskedLM.from_pretrained(dest, trust_remote_code=True).eval()
    tok = transformers.AutoTokenizer.from_pretrained(dest)
    text = "the class statement defines"
    ids = ck.vocab.encode(text)
    inner = tok(text, add_special_tokens=False)["input_ids"]
    assert inner == ck.vocab.inner_of[ids].tolist() and tok.mask_token_id == int(ck.vocab.inner_of[0])
    model = ck.build_model()
    x = torch.tensor([ids])
    with torch.no_grad():
        theirs = loaded(input_ids=torch.tensor([inner])).logits
        assert torch.equal(theirs[..., torch.from_numpy(ck.vocab.inner_of)], model.generator_logits(model(x), x))


@pytest.mark.parametrize("args, code, fragment", [
    (("--backbone", "hf:/no/such/dir"), 2, "not a directory"),
    (("--backbone", "bert-base-uncased"), 2, "expected own or hf:PATH"),
    (("--train-trunk",), 2, "need --backbone hf:PATH"),
    (("--trust-remote-code",), 2, "need --backbone hf:PATH"),
])
def test_bad_backbone_flags_are_one_line_errors(args, code, fragment, text_file, tmp_path):
    result = cli("train", "--preset", "tiny", "--data", text_file, "--out", tmp_path / "run", *args)
    assert_one_line_error(result, code, fragment)


def test_a_directory_that_is_not_a_model_is_refused(text_file, tmp_path, backbones):
    bare = tmp_path / "bare"
    bare.mkdir()
    result = cli("train", "--preset", "tiny", "--data", text_file, "--out", tmp_path / "a", "--backbone", f"hf:{bare}")
    assert_one_line_error(result, 2, "no config.json")
    notok = tmp_path / "notok"
    shutil.copytree(backbones["bert"], notok)
    (notok / "tokenizer.json").unlink()
    result = cli("train", "--preset", "tiny", "--data", text_file, "--out", tmp_path / "b", "--backbone", f"hf:{notok}")
    assert_one_line_error(result, 1, "no tokenizer.json")
    both = cli("train", "--preset", "tiny", "--data", text_file, "--out", tmp_path / "c",
               "--backbone", f"hf:{backbones['bert']}", "--tokenizer", "bpe:300")
    assert_one_line_error(both, 2, "brings its own tokenizer")
    long = cli("train", "--preset", "tiny", "--data", text_file, "--out", tmp_path / "d",
               "--backbone", f"hf:{backbones['bert']}", "--set", "model.block_size=512")
    assert_one_line_error(long, 2, "exceeds the backbone's 256 positions")


def test_trust_remote_code_is_off_unless_asked_and_warns_when_on(backbones, capsys):
    from cdt import backbone
    from cdt.config import ModelConfig

    path = backbones["bert"]
    tok = backbone.tokenizer_of(f"hf:{path}")
    quiet = backbone.pretrained(ModelConfig(vocab_size=len(tok), backbone=f"hf:{path}"), tok)
    assert "trust-remote-code" not in capsys.readouterr().err and not quiet.cfg.trust_remote_code
    backbone.pretrained(ModelConfig(vocab_size=len(tok), backbone=f"hf:{path}", trust_remote_code=True), tok)
    assert "--trust-remote-code: Python files in" in capsys.readouterr().err
    assert cli("train", "--help").stdout.count("--trust-remote-code") == 1  # a flag of its own, off by default


def test_without_the_extra_the_backbone_names_the_install_line(backbones, text_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    result = cli("train", "--preset", "tiny", "--data", text_file, "--out", tmp_path / "run",
                 "--backbone", f"hf:{backbones['bert']}")
    assert_one_line_error(result, 1, "pip install 'cdt[hf]'")


def test_export_refuses_a_used_directory_and_an_unknown_format(tiny_run, tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    assert_one_line_error(cli("export", used, "--checkpoint", tiny_run), 2, "not an empty directory")
    assert (used / "keep.txt").read_text() == "mine"
    assert_one_line_error(cli("export", tmp_path / "new", "--checkpoint", tiny_run, "--format", "onnx"), 2,
                          "expected one of hf")
    assert not (tmp_path / "new").exists()


@pytest.mark.slow  # a corpus, a tokenizer, a backbone run and a bench: ten seconds
def test_a_backbone_learns_the_functions_scaffold_and_answers_bfcl_with_valid_calls(tmp_path):
    """The way to BFCL's targets past a small trunk: a pretrained masked LM under `--preset functions`.
    Its rows are counted in its own tokens, and every call it makes parses and validates."""
    from tests.test_bfcl_bench import write_bfcl_dir

    backbone = hf_models.build(tmp_path / "roberta", "roberta", positions=640)
    out = tmp_path / "run"
    result = cli("train", "--preset", "functions", "--backbone", f"hf:{backbone}", "--out", out, "--max-iters", 4,
                 "--set", "model.block_size=640", "--set", "data.n_records=600", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    bench = cli("bench", "bfcl", "--checkpoint", out, "--data", write_bfcl_dir(tmp_path), "--steps", 3,
                "--json")
    assert bench.exit_code == 0, bench.output
    for c in json.loads(bench.stdout)["categories"]:
        assert c["n"] > 0 and c["parse_rate"] == c["valid_rate"] == 1.0
