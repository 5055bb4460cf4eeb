"""LLaVA-OneVision: SigLIP tower + 2-layer projector + Qwen2 decoder with AnyRes images
(HF `LlavaOnevisionForConditionalGeneration`, transformers 5.23).

Image handling follows `LlavaOnevisionModel.get_image_features` / `pack_image_features`:
each image is a base crop (the whole image resized) plus a grid of crops chosen by
`select_best_resolution` over `image_grid_pinpoints`. The grid features are laid out as one
feature map, the padding added by the processor is cut away (`unpad_image`), the map is
bilinearly downsized when larger than `anyres_max_N` crops allow (`vision_aspect_ratio`), an
`image_newline` is appended to every row, and the base crop's features come first. Images of
a multi-image sample (`batch_num_images` > 1) use the base crop plus one newline.

Static shapes. Everything data dependent is computed on the host by `host_prepare` (numpy):
crops are packed into `crop_slots` slots (default: n_images * `max_crops`, the largest crop
count any pinpoint gives, so the count never depends on aspect ratios), and every input
position gets 4 (index, weight) pairs into the table [projected crop features; image_newline]
(copies, newlines and bilinear taps alike). Inside jit the model runs the tower on all slots
and gathers. Hence one compilation per (batch, length, number of images) whatever the image
sizes; pass `crop_slots=K` to use a smaller fixed budget of crops per batch instead.

Files: `config` (HF config parsing), `siglip` (vision tower), `anyres` (host-side plan),
`model` (module), `keys` (checkpoint key table and registry entry).
"""

from jaxunlearn.modeling.llava_onevision.anyres import (
    NEWLINE, host_prepare, image_token_plan, num_crops, num_image_tokens, select_best_resolution,
    unpadded_box,
)
from jaxunlearn.modeling.llava_onevision.config import OneVisionConfig, default_grid_pinpoints
from jaxunlearn.modeling.llava_onevision.keys import (
    ONEVISION_KEYS, ONEVISION_LEGACY_EXPORT, conv_shapes, family,
)
from jaxunlearn.modeling.llava_onevision.model import LlavaOnevisionForConditionalGeneration
from jaxunlearn.modeling.llava_onevision.siglip import SiglipVisionConfig, SiglipVisionTransformer

__all__ = [
    "NEWLINE", "ONEVISION_KEYS", "ONEVISION_LEGACY_EXPORT", "LlavaOnevisionForConditionalGeneration",
    "OneVisionConfig", "SiglipVisionConfig", "SiglipVisionTransformer", "conv_shapes",
    "default_grid_pinpoints", "family", "host_prepare", "image_token_plan", "num_crops",
    "num_image_tokens", "select_best_resolution", "unpadded_box",
]
