"""Tiny stand-ins for the echo model's tests: a random-init SAM encoder and BERT saved like the real checkpoints,
a test plans template, and synthetic two-view echo datasets in the echo converters' raw format."""
from __future__ import annotations

import json
import os
from functools import partial

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from nnunetv2_universal.collection.templates import ECHO
from nnunetv2_universal.echo.metadata import ECHO_CLASSES, ECHO_LABELS, ECHO_REGIONS_CLASS_ORDER, ECHO_VIEWS

FRAMES, SIZE = 16, 32
SAM_OUT, BERT_HIDDEN = 16, 32
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "an", "echocardiography", "of", "left", "ventricle",
         "endocardium", "epicardium", "."]


def tiny_sam_checkpoint(folder: str) -> str:
    """A full-SAM-style checkpoint (image_encoder.* + other prefixes) of a 53,728-parameter ViT, image size 64."""
    from segment_anything.modeling import ImageEncoderViT
    torch.manual_seed(0)
    encoder = ImageEncoderViT(img_size=64, patch_size=16, in_chans=3, embed_dim=32, depth=2, num_heads=2,
                              mlp_ratio=4, out_chans=SAM_OUT, qkv_bias=True,
                              norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True, global_attn_indexes=(1,),
                              window_size=2)
    state = {f"image_encoder.{k}": v for k, v in encoder.state_dict().items()}
    state["mask_decoder.iou_token.weight"] = torch.zeros(1, 4)
    path = os.path.join(folder, "sam_tiny.pth")
    torch.save(state, path)
    return path


def tiny_bert_folder(folder: str) -> str:
    """An old-style BERT folder (config without model_type, vocab.txt, pytorch_model.bin) like Bio_ClinicalBERT."""
    from transformers import BertConfig, BertModel
    path = os.path.join(folder, "tiny_bert")
    os.makedirs(path, exist_ok=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=BERT_HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    model = BertModel(config)
    torch.save({f"bert.{k}": v for k, v in model.state_dict().items()}, os.path.join(path, "pytorch_model.bin"))
    config_dict = config.to_dict()
    config_dict.pop("model_type", None)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config_dict, f)
    with open(os.path.join(path, "vocab.txt"), "w") as f:
        f.write("\n".join(VOCAB) + "\n")
    return path


def echo_test_template(folder: str, **overrides) -> str:
    """The echo template shrunk for CPU tests (same keys, tiny sizes); returns the JSON path."""
    template = json.loads(json.dumps(ECHO))
    template.update(plans_name="EchoPlansTest", batch_size=2, patch_size=[FRAMES, SIZE, SIZE])
    template["arch_kwargs"].update(n_stages=3, features_per_stage=[8, 16, 32], kernel_sizes=[[3, 3, 3]] * 3,
                                   strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]], n_conv_per_stage=[1, 1, 1],
                                   n_conv_per_stage_decoder=[1, 1], query_dim=SAM_OUT, query_image_size=SIZE,
                                   text_dim=BERT_HIDDEN, score_dim=8, code_dim=16, **overrides)
    path = os.path.join(folder, "EchoPlansTest.json")
    with open(path, "w") as f:
        json.dump(template, f)
    return path


def synthetic_clip(view: int, seed: int, size: int = SIZE, frames: int = FRAMES):
    """(image uint8 (T, H, W) in [1, 255], label (T, H, W) with 1 cavity, 2 myocardium) for a view.

    A2C-like (view 0): elongated cavity on the left, bright edge at the top; A4C-like (view 1): elongated cavity on
    the right, bright edge on the left; PSAX-like (view 2): round cavity in the centre, bright edge at the bottom.
    The cavity shrinks from ED (frame 0) to ES (last frame)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    image = np.empty((frames, size, size), np.float32)
    label = np.zeros((frames, size, size), np.uint8)
    cy, cx = (size * 0.5, (0.38, 0.62, 0.5)[view] * size)
    ry0, rx0 = (size * 0.3, size * 0.14) if view < 2 else (size * 0.2, size * 0.2)
    for t in range(frames):
        s = 1.0 - 0.3 * t / (frames - 1) + rng.uniform(-0.03, 0.03)
        r = np.sqrt(((yy - cy) / (ry0 * s)) ** 2 + ((xx - cx) / (rx0 * s)) ** 2)
        cavity, wall = r <= 1.0, (r > 1.0) & (r <= 1.45)
        frame = rng.normal(70, 12, (size, size))
        frame[wall] = rng.normal(190, 15, int(wall.sum()))
        frame[cavity] = rng.normal(25, 8, int(cavity.sum()))
        if view == 0:
            frame[:3] = 250
        elif view == 1:
            frame[:, :3] = 250
        else:
            frame[-3:] = 250
        image[t] = frame
        label[t][wall], label[t][cavity] = 2, 1
    return np.clip(image, 1, 255).astype(np.uint8), label


def write_synthetic_echo_dataset(raw: str, dataset_id: int, name: str, prefix: str, dataset: str, view: str,
                                 n_train: int, n_val: int, n_test: int, endo_only: bool, seed: int = 0) -> str:
    """An echo dataset in the converters' format: annotated frames 0 and T-1, the rest ignore (3); EchoNet-like
    datasets (endo_only) label the cavity only."""
    folder = os.path.join(raw, f"Dataset{dataset_id:03d}_{name}")
    metadata, split = {}, {"train": [], "val": []}
    view_index = ECHO_VIEWS.index(view)
    for i in range(n_train + n_val + n_test):
        part = "train" if i < n_train else "val" if i < n_train + n_val else "test"
        case = f"{prefix}_{i:04d}_{view}"
        image, label = synthetic_clip(view_index, seed * 1000 + i)
        if endo_only:
            label[label == 2] = 0
        label[1:-1] = 3
        images, labels = ("imagesTs", "labelsTs") if part == "test" else ("imagesTr", "labelsTr")
        for sub, array, file in ((images, image, f"{case}_0000.nii.gz"), (labels, label, f"{case}.nii.gz")):
            os.makedirs(os.path.join(folder, sub), exist_ok=True)
            sitk.WriteImage(sitk.GetImageFromArray(array), os.path.join(folder, sub, file))
        metadata[case] = {"dataset": dataset, "view": view,
                          "annotated_classes": ["LV_endo"] if endo_only else ["LV_epi", "LV_endo"],
                          "annotated_frames": [0, FRAMES - 1], "ed_frame": 0, "es_frame": FRAMES - 1,
                          "source_frames": list(range(FRAMES)), "reversed": False, "split": part}
        if part != "test":
            split[part].append(case)
    dataset_json = {"channel_names": {"0": "US"}, "labels": ECHO_LABELS,
                    "regions_class_order": ECHO_REGIONS_CLASS_ORDER, "numTraining": n_train + n_val,
                    "file_ending": ".nii.gz",
                    "overwrite_image_reader_writer": "SimpleITKIO", "name": name, "echo_views": ECHO_VIEWS,
                    "echo_classes": ECHO_CLASSES, "echo_case_metadata": metadata}
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump(dataset_json, f)
    with open(os.path.join(folder, "splits_final.json"), "w") as f:
        json.dump([split], f)
    return folder
