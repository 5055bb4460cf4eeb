"""jaxunlearn: machine unlearning for multimodal LLMs in JAX/Flax.

Public API::

    import jaxunlearn as ju
    model = ju.load_pretrained("path/to/hf_dir", dtype="float32")
    logits = model.logits(input_ids=ids, attention_mask=mask, pixel_values=pix)
    tokens = ju.generate(model, input_ids=ids, attention_mask=mask, pixel_values=pix,
                         max_new_tokens=16)
    ju.save_pretrained(model, "out_dir")
    model = model.replace(params=new_params)
"""

from jaxunlearn.checkpoint.hf import (
    CheckpointError, load_pretrained, model_from_config, save_pretrained,
)
from jaxunlearn.modeling.generate import generate
from jaxunlearn.modeling.model import Model

__version__ = "0.1.0"

__all__ = ["CheckpointError", "Model", "generate", "load_pretrained", "model_from_config",
           "save_pretrained", "__version__"]
