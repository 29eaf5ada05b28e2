"""cdt's own trunk as a `transformers` model, for `cdt export --format hf` of a run trained on it.

`cdt export` copies this file into the exported directory as `modeling_cdt.py` and names its two
classes in config.json's `auto_map`, so

    AutoModelForMaskedLM.from_pretrained(DIR, trust_remote_code=True)

rebuilds the model with cdt's own `DiffusionLM` (cdt must be installed: the file imports it, so
there is one copy of the architecture). The output's `logits` are the generator's; `hidden_states`
holds the trunk's last states, which `model.cdt.critic_logits` turns into the critic's logits
(higher = more likely wrong). Pad a batch with the [PAD] id: the trunk masks those keys itself.
"""

from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput


class CdtConfig(PretrainedConfig):
    model_type = "cdt"

    def __init__(self, cdt_model: dict | None = None, **kwargs):
        self.cdt_model = dict(cdt_model or {})  # cdt's ModelConfig as plain values
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
        h = self.cdt(input_ids)
        return MaskedLMOutput(logits=self.cdt.generator_logits(h, input_ids), hidden_states=(h,))
