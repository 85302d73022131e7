"""ClinicalBERT embeddings of the class prompts "An echocardiography of [class].", computed once from a local
checkpoint folder (Bio_ClinicalBERT: config.json, vocab.txt, pytorch_model.bin) and then stored in the network as
a buffer, so training steps and prediction never load BERT.

transformers' Auto classes fail on this old-style folder (no model_type, no tokenizer config), so the Bert classes
are used explicitly, with local files only.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch

CLINICALBERT_ENV = "nnUNet_universal_clinicalbert"
PROMPT_TEMPLATE = "An echocardiography of {}."
POOLINGS = ("cls", "mean")


class TextEncoderError(RuntimeError):
    """The text-encoder folder is missing or unreadable."""


@torch.no_grad()
def class_text_embeddings(class_texts: Sequence[str], path: Optional[str] = None, pooling: str = "mean",
                          template: str = PROMPT_TEMPLATE, relative_to_template: bool = True) -> torch.Tensor:
    """(K, hidden) embeddings of template.format(text) per class: the mean over the non-padding tokens of BERT's
    last hidden state (default: the class words enter directly), or the [CLS] state ("cls"), which for prompts
    that differ in one word is nearly parallel across the classes.

    relative_to_template: minus the embedding of the bare template (`template.format("")`), the part every prompt
    shares by construction. Each class keeps what its own words add; unlike centring over the classes, a class's
    vector does not depend on the other classes (with two classes centring leaves +-u, a one-hot code)."""
    from transformers import BertModel, BertTokenizer

    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    path = path or os.environ.get(CLINICALBERT_ENV)
    if not path:
        raise TextEncoderError(f"no text encoder given: set {CLINICALBERT_ENV} to the local Bio_ClinicalBERT folder "
                               f"(config.json, vocab.txt, pytorch_model.bin); nothing is downloaded")
    if not os.path.isdir(path):
        raise TextEncoderError(f"text encoder folder {path} does not exist")
    try:
        tokenizer = BertTokenizer.from_pretrained(path, local_files_only=True)
        model = BertModel.from_pretrained(path, local_files_only=True).eval()
    except (OSError, ValueError) as e:
        raise TextEncoderError(f"cannot load a BERT model from {path}: {e}") from e
    prompts = [template.format(t) for t in class_texts] + ([template.format("")] if relative_to_template else [])
    tokens = tokenizer(prompts, padding=True, return_tensors="pt")
    hidden = model(**tokens).last_hidden_state
    if pooling == "cls":
        pooled = hidden[:, 0].float()
    else:
        mask = tokens["attention_mask"][..., None].float()
        pooled = ((hidden * mask).sum(1) / mask.sum(1)).float()
    return pooled[:-1] - pooled[-1:] if relative_to_template else pooled
