"""cdt's own trunk as a `transformers` model, for `cdt export --format hf` of a run trained on it.

`cdt export` copies this file into the exported directory as `modeling_cdt.py` and names its two
classes in config.json's `auto_map`, so

    AutoModelForMaskedLM.from_pretrained(DIR, trust_remote_code=True)

rebuilds the model with cdt's own `DiffusionLM` (cdt must be installed: the file imports it, so
there is one copy of the architecture). The output's `logits` are the generator's; `hidden_states`
holds the trunk's last states, which `model.cdt.critic_logits` turns into the critic's logits
(higher = more likely wrong). Pad a batch with the [PAD] id: the trunk masks those keys itself.
A tokenizer that numbers its tokens otherwise than cdt (a `tokenizer.json` whose mask token is not
id 0) comes with `cdt_ids` in the config: input ids are read through it, and the logits' columns are
the tokenizer's ids, so the model reads and writes the exported tokenizer's ids.
"""

from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput


class CdtConfig(PretrainedConfig):
    model_type = "cdt"

    def __init__(self, cdt_model: dict | None = None, cdt_ids: list | None = None, **kwargs):
        self.cdt_model = dict(cdt_model or {})  # cdt's ModelConfig as plain values
        self.cdt_ids = None if cdt_ids is None else list(cdt_ids)  # the tokenizer's id -> cdt's (None: the same)
        super().__init__(**kwargs)


class CdtForMaskedLM(PreTrainedModel):
    config_class = CdtConfig
    base_model_prefix = "cdt"

    def __init__(self, config: CdtConfig):
        super().__init__(config)
        from cdt.config import ModelConfig
        from cdt.model import DiffusionLM

        self.cdt = DiffusionLM(ModelConfig(**config.cdt_model))
        self._tables_ready = False
        self.post_init()

    def _init_weights(self, module):  # cdt initialises its own modules; loading replaces them anyway
        pass

    def get_input_embeddings(self):
        return self.cdt.embed

    def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
        if not self._tables_ready:  # built on the meta device by the loader: the unsaved tables are empty
            self.cdt.reset_buffers()
            self._tables_ready = True
        ids = input_ids if self.config.cdt_ids is None else self._ids(input_ids.device)[input_ids]
        h = self.cdt(ids)
        logits = self.cdt.generator_logits(h, ids)
        if self.config.cdt_ids is not None:  # column j: the tokenizer's token j
            logits = logits[..., self._ids(logits.device)]
        return MaskedLMOutput(logits=logits, hidden_states=(h,))

    def _ids(self, device):
        import torch

        if getattr(self, "_id_table", None) is None or self._id_table.device != device:
            self._id_table = torch.tensor(self.config.cdt_ids, dtype=torch.long, device=device)
        return self._id_table
