"""Qwen2-VL and Qwen2.5-VL (HF `Qwen2VLForConditionalGeneration`,
`Qwen2_5_VLForConditionalGeneration`): native-resolution ViT + patch merger + Qwen2 decoder
with M-RoPE.

Static shapes under jit
-----------------------
Everything data dependent is computed on the host by `host_prepare` (numpy), which
`Model.host_inputs` (and so `Model.logits` and `ju.generate`) calls before jit:

- M-RoPE position ids [3, B, T], exactly HF's `get_rope_index` (left-padding aware; padding
  gets 0); image tokens are found at `image_token_id`;
- the patch sequence (all images of the batch, HF order) padded to `patch_bucket(N)`: the next
  power of two >= max(N, 64), a multiple of merge_size**2; `pixel_values` [N_pad, C*T*P*P];
- per-patch rotary (row, col) ids, segment ids for per-image (per-frame) attention and, for
  Qwen2.5-VL, window ids plus the window permutation and its inverse as index arrays
  (see `qwen_vl.vision`). The block-diagonal masks are built from the ids inside jit.

So one compiled program serves every batch with the same (B, T) and patch bucket N_pad:
different image sizes, aspect ratios, image counts per row and padding amounts do not
recompile; only a batch whose total patch count crosses into another bucket compiles a new
one (log2 many in total). `image_grid_thw` and `mm_token_type_ids` are consumed on the host
and never reach jit. Text-only batches (no `pixel_values`) are a separate, also static,
program. Generation continues positions from max prefill position + 1, which is HF's
`rope_deltas` rule, so the generic `ju.generate` needs no Qwen-specific hook.

Files: `config` (HF config parsing), `vision` (vision tower), `host` (host-side input
preparation), `model` (module), `keys` (checkpoint key table and registry entries).
"""

from jaxunlearn.modeling.qwen_vl.config import QWEN2_5_VL, QWEN2_VL, QwenVisionConfig, QwenVLConfig
from jaxunlearn.modeling.qwen_vl.host import (
    host_prepare, patch_bucket, rope_index, vision_host_arrays,
)
from jaxunlearn.modeling.qwen_vl.keys import (
    QWEN_VL_INMEMORY_EXPORT, QWEN_VL_KEYS, conv_shapes, family_qwen2_5_vl, family_qwen2_vl,
)
from jaxunlearn.modeling.qwen_vl.model import QwenVLForConditionalGeneration
from jaxunlearn.modeling.qwen_vl.vision import QwenVisionTransformer

__all__ = [
    "QWEN2_5_VL", "QWEN2_VL", "QWEN_VL_INMEMORY_EXPORT", "QWEN_VL_KEYS", "QwenVLConfig",
    "QwenVLForConditionalGeneration", "QwenVisionConfig", "QwenVisionTransformer", "conv_shapes",
    "family_qwen2_5_vl", "family_qwen2_vl", "host_prepare", "patch_bucket", "rope_index",
    "vision_host_arrays",
]
