"""The shared fine-tuned tiny LLaVA really learned its training answers."""

import dataclasses

import numpy as np

from jaxunlearn.data.pipeline import make_dataset, qa_records
from jaxunlearn.modeling.model import forward_logits
from jaxunlearn.objectives.nll import token_accuracy
from jaxunlearn.modeling.model import model_inputs


def test_vanilla_memorised_training_answers(tiny_vanilla):
    model, tok, bench, pipe = tiny_vanilla
    for modality in ("multi", "text"):
        recs = qa_records(bench.profiles[:8], "llava", "train", modality)
        ds = make_dataset(recs, tok, dataclasses.replace(pipe, shuffle=False))
        accs = [float(token_accuracy(forward_logits(model.graphdef, model.params,
                                                    model_inputs(b)), b)) for b in ds]
        assert np.mean(accs) > 0.9, (modality, accs)
