"""The echo model's parts: SAM and ClinicalBERT loading through the real code path (tiny random stand-ins saved like
the real checkpoints), the prompt pool, the network, masked losses, the query cache, key separation by view, the
echo collection, evaluation and DICOM reading."""
from __future__ import annotations

import json
import os

import numpy as np
import pydicom.data
import pytest
import torch

from echo_synthetic import (BERT_HIDDEN, FRAMES, SAM_OUT, SIZE, echo_test_template, synthetic_clip, tiny_bert_folder,
                            tiny_sam_checkpoint, write_synthetic_echo_dataset)
from nnunetv2_universal.conditioning import Condition
from nnunetv2_universal.echo import query_encoder as qe
from nnunetv2_universal.echo.evaluate import case_frame_dice
from nnunetv2_universal.echo.metadata import EchoMetadata, EchoMetadataError
from nnunetv2_universal.echo.predict import read_cine
from nnunetv2_universal.echo.text_embeddings import TextEncoderError, class_text_embeddings
from nnunetv2_universal.networks.echo_prompt import EchoPromptNetwork
from nnunetv2_universal.networks.prompt_pool import PromptPool
from nnunetv2_universal.training.echo_trainer import masked_bce_dice, ramp


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("stand_ins"))
    return {"sam": tiny_sam_checkpoint(root), "bert": tiny_bert_folder(root), "root": root}


def make_network(**overrides) -> EchoPromptNetwork:
    with open(echo_test_template(str(overrides.pop("folder")))) as f:
        kwargs = json.load(f)["arch_kwargs"]
    kwargs.update(overrides)
    kwargs.update(conv_op=torch.nn.Conv3d, norm_op=torch.nn.InstanceNorm3d, nonlin=torch.nn.LeakyReLU, dropout_op=None)
    torch.manual_seed(0)
    return EchoPromptNetwork(input_channels=1, num_classes=2, **kwargs)


# ---------------------------------------------------------------- SAM query encoder

def test_sam_loads_from_full_checkpoint_and_resizes_positions(stand_ins):
    encoder = qe.load_sam_query_encoder(stand_ins["sam"], image_size=SIZE)
    assert encoder.pos_embed.shape == (1, 2, 2, 32)
    assert encoder.blocks[1].attn.rel_pos_h.shape == (3, 16)  # global block: 2 * 2 - 1
    assert encoder.blocks[0].attn.rel_pos_h.shape == (3, 16)  # windowed block (window 2) unchanged
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training
    clips = torch.rand(3, 1, FRAMES, 48, 48)
    query = qe.first_frame_query(encoder, clips, SIZE)
    assert query.shape == (3, SAM_OUT)
    # the query depends on frame 0 only, and not on its intensity scale (min-max rescaling)
    changed = clips.clone()
    changed[:, :, 1:] = 0
    changed[:, :, 0] = changed[:, :, 0] * 7 + 3
    assert torch.allclose(qe.first_frame_query(encoder, changed, SIZE), query, atol=1e-5)
    with pytest.raises(RuntimeError, match="size of tensor"):
        encoder(torch.rand(1, 3, 48, 48))  # wrong input size for the resized position embedding


def test_sam_config_is_read_off_the_weights(stand_ins):
    state = qe._encoder_state_dict(torch.load(stand_ins["sam"], weights_only=True), "x")
    config = qe.sam_encoder_config(state)
    assert config == {"img_size": 64, "patch_size": 16, "in_chans": 3, "embed_dim": 32, "depth": 2, "num_heads": 2,
                      "mlp_ratio": 4.0, "out_chans": SAM_OUT, "qkv_bias": True, "use_rel_pos": True,
                      "window_size": 2, "global_attn_indexes": (1,)}


def test_sam_errors_are_clear(stand_ins, tmp_path, monkeypatch):
    monkeypatch.delenv(qe.SAM_CHECKPOINT_ENV, raising=False)
    with pytest.raises(qe.QueryEncoderError, match=qe.SAM_CHECKPOINT_ENV):
        qe.load_sam_query_encoder(None)
    with pytest.raises(qe.QueryEncoderError, match="does not exist"):
        qe.load_sam_query_encoder(str(tmp_path / "missing.pth"))
    torch.save({"foo": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(qe.QueryEncoderError, match="not a SAM checkpoint"):
        qe.load_sam_query_encoder(str(tmp_path / "other.pth"))
    (tmp_path / "truncated.pth").write_bytes(open(stand_ins["sam"], "rb").read()[:100])
    with pytest.raises(qe.QueryEncoderError, match="cannot read"):
        qe.load_sam_query_encoder(str(tmp_path / "truncated.pth"))
    with pytest.raises(qe.QueryEncoderError, match="multiple of the patch size"):
        qe.load_sam_query_encoder(stand_ins["sam"], image_size=40)


def test_query_cache_round_trip(tmp_path):
    cache = qe.QueryCache(str(tmp_path / "q"), "abc_32")
    assert cache.missing(["a", "b"]) == ["a", "b"]
    cache.update({"a": torch.ones(4), "b": torch.zeros(4)})
    cache.save()
    again = qe.QueryCache(str(tmp_path / "q"), "abc_32")
    assert again.missing(["a", "b", "c"]) == ["c"] and again.stack(["b", "a"]).shape == (2, 4)
    with pytest.raises(KeyError, match="case c"):
        again.stack(["c"])


# ---------------------------------------------------------------- text embeddings

def test_class_text_embeddings_from_local_bert(stand_ins, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["left ventricle epicardium", "left ventricle endocardium"]
    cls = class_text_embeddings(texts, stand_ins["bert"], pooling="cls")
    mean = class_text_embeddings(texts, stand_ins["bert"])  # default: mean over the tokens
    assert cls.shape == mean.shape == (2, BERT_HIDDEN)
    assert not torch.allclose(cls[0], cls[1]) and not torch.allclose(cls, mean)
    monkeypatch.delenv("nnUNet_universal_clinicalbert", raising=False)
    with pytest.raises(TextEncoderError, match="nnUNet_universal_clinicalbert"):
        class_text_embeddings(texts)
    with pytest.raises(TextEncoderError, match="does not exist"):
        class_text_embeddings(texts, os.path.join(stand_ins["root"], "nope"))


# ---------------------------------------------------------------- prompt pool and network

def test_prompt_pool_selection():
    torch.manual_seed(0)
    pool = PromptPool(num_groups=3, per_group=3, length=5, dim=16, top_k=3)
    query = torch.randn(4, 16)
    forced = pool(query, torch.tensor([0, 2, 1, 2]))
    assert forced.indices.tolist() == [[0, 1, 2], [6, 7, 8], [3, 4, 5], [6, 7, 8]]
    assert forced.prompts.shape == (4, 15, 16) and forced.similarity.shape == (4, 9)
    assert forced.voted_group(3, 3).tolist() == [0, 2, 1, 2]
    free = pool(query)
    expected = torch.nn.functional.cosine_similarity(query[:, None], pool.keys[None], dim=2).topk(3).indices
    assert torch.equal(free.indices, expected)
    assert torch.allclose(free.matching, free.similarity.gather(1, free.indices).sum(1))
    with pytest.raises(ValueError, match="group ids"):
        pool(query, torch.tensor([0, 3, 0, 0]))


def test_network_shapes_gradients_and_selection(tmp_path):
    net = make_network(folder=tmp_path)
    net.class_embeddings.copy_(torch.randn(2, BERT_HIDDEN))  # what the trainer fills from ClinicalBERT
    net.class_embeddings_ready.fill_(True)
    x, query = torch.randn(2, 1, FRAMES, SIZE, SIZE), torch.randn(2, SAM_OUT)
    net.train()
    logits, aux = net.forward_with_aux(x, query=query, views=torch.tensor([0, 2]))
    # score maps one decoder stage above full resolution (the template's last stride is 1x2x2)
    assert logits.shape == (2, 2, FRAMES, SIZE, SIZE) and aux["scores"].shape == (2, 2, FRAMES, SIZE // 2, SIZE // 2)
    assert net.decoder.transpconvs[-1].in_channels == 16 + 2  # the score maps travel up with the features
    assert aux["selection"].indices.tolist() == [[0, 1, 2], [6, 7, 8]]  # training: the view's own slots
    (logits.mean() - aux["selection"].matching.mean()).backward()
    assert net.prompt_pool.keys.grad.abs().sum() > 0 and net.prompt_pool.values.grad.abs().sum() > 0
    assert net.controller.weight.grad.abs().sum() > 0 and net.text_projection.weight.grad.abs().sum() > 0
    assert len(net.decoder.seg_layers) == 0 and net.decoder.deep_supervision is False
    assert "class_embeddings" in net.state_dict() and not any("query_encoder" in k for k in net.state_dict())
    net.eval()
    with torch.no_grad():
        _, aux = net.forward_with_aux(x, query=query, views=torch.tensor([0, 2]))
    assert torch.equal(aux["selection"].indices, aux["selection"].similarity.topk(3).indices)  # no view at inference
    net.class_embeddings_ready.fill_(False)
    with pytest.raises(RuntimeError, match="class_embeddings are not set"):
        net(x)


def test_network_without_query_uses_the_attached_sam(tmp_path, stand_ins):
    net = make_network(folder=tmp_path, text_mode="onehot").eval()
    calls = []
    net.query_encoder_loader = lambda: calls.append(1) or qe.load_sam_query_encoder(stand_ins["sam"], SIZE)
    with torch.no_grad():
        out = net(torch.randn(1, 1, FRAMES, SIZE, SIZE))
        net(torch.randn(1, 1, FRAMES, SIZE, SIZE))
    assert out.shape == (1, 2, FRAMES, SIZE, SIZE) and calls == [1]  # loaded once, lazily
    net.query_encoder_loader = None
    net._query_encoder.clear()
    with pytest.raises(qe.QueryEncoderError, match="no SAM query encoder"):
        net(torch.randn(1, 1, FRAMES, SIZE, SIZE))


def test_ablation_switches(tmp_path):
    x, query = torch.randn(1, 1, FRAMES, SIZE, SIZE), torch.randn(1, SAM_OUT)
    none = make_network(folder=tmp_path, text_mode="none").eval()
    logits, aux = none.forward_with_aux(x, query=query)
    assert aux["scores"] is None and logits.shape == (1, 2, FRAMES, SIZE, SIZE)
    assert not hasattr(none, "pixel_projection")
    onehot = make_network(folder=tmp_path, text_mode="onehot")
    assert torch.equal(onehot.class_embeddings, torch.eye(2))
    given = make_network(folder=tmp_path, text_mode="onehot", prompt_selection="view").eval()
    with pytest.raises(ValueError, match="needs the view"):
        given(x)
    given.condition = Condition(view=1)
    with torch.no_grad():
        _, aux = given.forward_with_aux(x, query=query)
    assert aux["selection"].indices.tolist() == [[3, 4, 5]]


def test_masked_frames_and_missing_classes_get_zero_gradient():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, FRAMES, 8, 8, requires_grad=True)
    target = (torch.rand(2, 2, FRAMES, 8, 8) > 0.5).float()
    frame_mask = torch.zeros(2, 1, FRAMES, 8, 8)
    frame_mask[:, :, [0, FRAMES - 1]] = 1  # ED and ES annotated
    available = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # sample 1: LV_endo only (EchoNet)
    masked_bce_dice(logits, target, frame_mask, available).backward()
    grad = logits.grad
    assert grad[:, :, 1:FRAMES - 1].abs().sum() == 0  # un-annotated frames
    assert grad[1, 0].abs().sum() == 0  # class the dataset does not annotate
    assert grad[0, :, 0].abs().sum() > 0 and grad[1, 1, FRAMES - 1].abs().sum() > 0


def test_ramp_values():
    assert ramp(0.0) == pytest.approx(0.0067, abs=1e-4) and ramp(0.5) == pytest.approx(0.2865, abs=1e-4)
    assert ramp(0.8) == pytest.approx(0.8187, abs=1e-4) and ramp(1.0) == 1.0


def test_keys_of_two_views_separate_after_short_training(tmp_path, stand_ins):
    """Queries of synthetic A2C-like and PSAX-like clips from the (tiny) SAM; training with the views' own slots and
    the matching loss makes free top-k selection vote the right view for every clip."""
    encoder = qe.load_sam_query_encoder(stand_ins["sam"], SIZE)
    views = [0, 2] * 6
    clips = torch.stack([torch.from_numpy(synthetic_clip(v, seed=i)[0]).float()[None] for i, v in enumerate(views)])
    queries = qe.first_frame_query(encoder, clips, SIZE)
    pool = PromptPool(3, 3, 5, SAM_OUT, 3)
    view_ids = torch.tensor(views)
    before = (pool(queries).voted_group(3, 3) == view_ids).float().mean()
    optimizer = torch.optim.Adam(pool.parameters(), lr=0.05)
    for _ in range(60):
        optimizer.zero_grad()
        (-pool(queries, view_ids).matching.mean()).backward()
        optimizer.step()
    after = pool(queries).voted_group(3, 3)
    assert torch.equal(after, view_ids), (before, after)


# ---------------------------------------------------------------- metadata, collection, evaluation, DICOM

def test_metadata_checks(tmp_path):
    folder = write_synthetic_echo_dataset(str(tmp_path), 1, "A", "A", "CAMUS", "A2C", 1, 1, 0, False)
    dataset_json = json.load(open(os.path.join(folder, "dataset.json")))
    meta = EchoMetadata(dataset_json)
    assert meta.class_names == ["LV_epi", "LV_endo"] and meta.views == ["A2C", "A4C", "PSAX"]
    assert meta.view_indices(["A_0000_A2C"]) == [0] and meta.availability(["A_0000_A2C"]) == [[1.0, 1.0]]
    with pytest.raises(EchoMetadataError, match="case nope"):
        meta.view_indices(["nope"])
    dataset_json["echo_case_metadata"]["A_0000_A2C"]["view"] = "PLAX"
    with pytest.raises(EchoMetadataError, match="A_0000_A2C"):
        EchoMetadata(dataset_json)
    with pytest.raises(EchoMetadataError, match="echo_case_metadata"):
        EchoMetadata({"labels": {}})


def test_build_echo_collection_merges_members(tmp_path, monkeypatch):
    for d in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"nnUNet_{d}", str(tmp_path / d))
        os.makedirs(tmp_path / d)
    import importlib

    import nnunetv2.paths
    importlib.reload(nnunetv2.paths)
    from nnunetv2_universal.echo import collection
    importlib.reload(collection)
    raw = str(tmp_path / "raw")
    write_synthetic_echo_dataset(raw, 701, "A", "A", "CAMUS", "A2C", 2, 1, 1, False)
    write_synthetic_echo_dataset(raw, 702, "B", "B", "EchoNetDynamic", "A4C", 2, 1, 1, True)
    name = collection.build_echo_collection([701, 702], 703, "Both")
    folder = os.path.join(raw, name)
    dataset_json = json.load(open(os.path.join(folder, "dataset.json")))
    assert dataset_json["numTraining"] == 6 and len(dataset_json["echo_case_metadata"]) == 8
    assert sorted(os.listdir(os.path.join(folder, "imagesTs"))) == ["A_0003_A2C_0000.nii.gz", "B_0003_A4C_0000.nii.gz"]
    splits = json.load(open(os.path.join(folder, "splits_final.json")))
    assert splits == [{"train": ["A_0000_A2C", "A_0001_A2C", "B_0000_A4C", "B_0001_A4C"],
                       "val": ["A_0002_A2C", "B_0002_A4C"]}]
    with pytest.raises(FileExistsError, match="--overwrite"):
        collection.build_echo_collection([701, 702], 703, "Both")
    os.makedirs(os.path.join(raw, "Dataset704_NotEcho"))
    json.dump({"labels": {"background": 0, "x": 1}}, open(os.path.join(raw, "Dataset704_NotEcho", "dataset.json"), "w"))
    with pytest.raises(ValueError, match="not an echo dataset"):
        collection.build_echo_collection([701, 704], 705, "Bad")
    assert not [d for d in os.listdir(raw) if d.startswith(("Dataset705", ".Dataset705"))]  # nothing half-written


def test_frame_dice_band_and_region():
    reference = np.full((4, 8, 8), 3, np.uint8)
    reference[0] = 0
    reference[0, 2:6, 2:6] = 2
    reference[0, 3:5, 3:5] = 1
    prediction = np.zeros_like(reference)
    prediction[0, 2:6, 2:6] = 1  # cavity predicted over the whole epicardial area
    both = case_frame_dice(prediction, reference, ["LV_epi", "LV_endo"])
    assert both["LV_endo"] == [pytest.approx(2 * 4 / (16 + 4))]
    assert both["LV_epi_band"] == [0.0] and both["LV_epi_region"] == [1.0]
    assert set(case_frame_dice(prediction, reference, ["LV_endo"])) == {"LV_endo"}  # EchoNet: endo only


def test_read_real_echo_cine():
    frames, geometry = read_cine(pydicom.data.get_testdata_file("examples_ybr_color.dcm"))
    assert frames.shape == (30, 240, 320) and frames.dtype == np.float32
    assert geometry["box"] == (84, 31, 320, 240)  # region clipped to the (downsampled) image
    assert geometry["mm_per_pixel"] == pytest.approx((0.5105, 0.5105), abs=1e-4)
    assert geometry["frame_time_ms"] == pytest.approx(33.333)


def test_generated_head_reads_shared_features_once_with_the_same_result():
    """The classes of a sample share the head input: applying the first generated layer to it once (groups =
    samples) equals applying the per-instance head to k materialised copies, values and gradients."""
    from nnunetv2_universal.networks.blocks import GeneratedConvHead
    head = GeneratedConvHead([(8, 8), (8, 8), (1, 8)])
    b, k = 3, 2
    features = torch.randn(b, 8, 4, 5, 6, requires_grad=True)
    params = torch.randn(b * k, head.num_params, requires_grad=True)
    copies = features[:, None].expand(-1, k, *features.shape[1:]).reshape(b * k, *features.shape[1:])
    expected = head.apply(copies, params)
    grads_expected = torch.autograd.grad(expected.square().sum(), (features, params))
    shared = head.apply(features, params, instances_per_input=k)
    grads_shared = torch.autograd.grad(shared.square().sum(), (features, params))
    torch.testing.assert_close(shared, expected)
    for g_shared, g_expected in zip(grads_shared, grads_expected):
        torch.testing.assert_close(g_shared, g_expected)
    with pytest.raises(ValueError, match="expected generated parameters"):
        head.apply(features, params[:-1], instances_per_input=k)


def test_score_maps_are_cosines_of_projected_voxels_and_text(tmp_path):
    """The fused computation equals its definition: cosine between each voxel's projected feature and each class's
    projected embedding (values and gradients)."""
    import torch.nn.functional as F
    net = make_network(folder=tmp_path)
    net.class_embeddings.normal_()
    features = torch.randn(2, net.pixel_projection.in_channels, 4, 8, 8, requires_grad=True)
    embeddings = net.text_embeddings()
    fused = net.score_maps(features, embeddings)
    pixels = F.normalize(net.pixel_projection(features), dim=1, eps=1e-6)
    text = F.normalize(net.text_projection(embeddings), dim=1, eps=1e-6)
    definition = torch.einsum("bc...,kc->bk...", pixels, text)
    torch.testing.assert_close(fused, definition)
    torch.testing.assert_close(torch.autograd.grad(fused.square().sum(), features)[0],
                               torch.autograd.grad(definition.square().sum(), features)[0])
    assert fused.abs().max() <= 1 + 1e-5


# ---------------------------------------------------------------- paper fidelity (issue 15)

def test_text_codes_keep_the_text_distinct_and_not_antipodal(tmp_path, stand_ins, monkeypatch):
    """Mean-pooled token states minus the bare template's, each scaled to unit length, no centring over the
    classes: the two classes' codes differ clearly and are not +-u (centring two vectors makes them exactly
    antipodal, like a centred one-hot code). Raw mean-pooled prompts are nearly parallel."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["left ventricle epicardium", "left ventricle endocardium"]
    cos = torch.nn.functional.cosine_similarity
    raw = class_text_embeddings(texts, stand_ins["bert"], relative_to_template=False)
    net = make_network(folder=tmp_path)
    net.class_embeddings.copy_(class_text_embeddings(texts, stand_ins["bert"]))
    net.class_embeddings_ready.fill_(True)
    embeddings = net.text_embeddings()
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(2))
    relative = float(cos(embeddings[0], embeddings[1], dim=0))
    assert -0.5 < relative < 0.9 < float(cos(raw[0], raw[1], dim=0))
    with torch.no_grad():
        codes = embeddings @ net.text_code.weight.T  # the class-dependent part of the controller's text code
    assert -0.5 < float(cos(codes[0], codes[1], dim=0)) < 0.9
    centred = embeddings - embeddings.mean(0)
    assert float(cos(centred[0], centred[1], dim=0)) == pytest.approx(-1.0, abs=1e-5)  # what the old code did


def test_score_maps_at_full_resolution_is_a_switch(tmp_path):
    net = make_network(folder=tmp_path, text_mode="onehot", score_map_stage=0).eval()
    with torch.no_grad():
        logits, aux = net.forward_with_aux(torch.randn(1, 1, FRAMES, SIZE, SIZE), query=torch.randn(1, SAM_OUT))
    assert aux["scores"].shape == logits.shape == (1, 2, FRAMES, SIZE, SIZE)
    assert net.head_input[-1].in_channels == 8 + 2 and net.decoder.transpconvs[-1].in_channels == 16
    with pytest.raises(ValueError, match="score_map_stage"):
        make_network(folder=tmp_path, score_map_stage=2)


def _loss_stub(**attributes):
    from types import SimpleNamespace
    from nnunetv2_universal.training.echo_trainer import EchoPromptTrainer
    stub = SimpleNamespace(loss_mode="safe", seg_loss="bce", pixel_text_weight=1.0, segmentation_weight=1.0,
                           prompt_weight=1.0, score_temperature=0.07, num_epochs=4, num_iterations_per_epoch=5,
                           current_epoch=0, _iteration_in_epoch=0)
    stub.__dict__.update(attributes)
    stub.training_progress = lambda: EchoPromptTrainer.training_progress(stub)
    return stub, EchoPromptTrainer.compute_loss


def test_losses_follow_the_paper():
    """L_seg = 1 * pixel-text CE (at the score maps' resolution) + 1 * masked BCE; paper total
    (1 - lambda(t)) L_seg - lambda(t) L_pr with t counted in iterations; safe total L_seg - lambda(t) L_pr."""
    from types import SimpleNamespace
    import torch.nn.functional as F
    from nnunetv2_universal.training.echo_trainer import masked_bce, masked_dice
    torch.manual_seed(0)
    logits = torch.randn(2, 2, FRAMES, 8, 8)
    scores = torch.rand(2, 2, FRAMES, 4, 4) * 2 - 1
    target = (torch.rand(2, 2, FRAMES, 8, 8) > 0.5).float()
    frame_mask = torch.zeros(2, 1, FRAMES, 8, 8)
    frame_mask[:, :, [0, FRAMES - 1]] = 1
    available = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    matching = torch.tensor([2.0, 1.0])
    aux = {"scores": scores, "selection": SimpleNamespace(matching=matching)}
    small = dict(size=(FRAMES, 4, 4), mode="nearest")
    pixel_text = masked_bce(scores / 0.07, F.interpolate(target, **small), F.interpolate(frame_mask, **small),
                            available)
    seg = pixel_text + masked_bce(logits, target, frame_mask, available)
    for epoch, step in ((0, 0), (2, 3), (3, 4)):
        lam = ramp((epoch * 5 + step) / 19)  # per iteration: 4 epochs x 5 iterations
        stub, compute = _loss_stub(loss_mode="paper", current_epoch=epoch, _iteration_in_epoch=step)
        torch.testing.assert_close(compute(stub, logits, aux, target, frame_mask, available),
                                   (1 - lam) * seg - lam * 1.5)
        stub, compute = _loss_stub(current_epoch=epoch, _iteration_in_epoch=step)
        torch.testing.assert_close(compute(stub, logits, aux, target, frame_mask, available), seg - lam * 1.5)
    stub, compute = _loss_stub(current_epoch=3, _iteration_in_epoch=4, loss_mode="paper")
    assert stub.training_progress() == 1.0 and float(compute(stub, logits, aux, target, frame_mask,
                                                             available)) == pytest.approx(-1.5)
    stub, compute = _loss_stub(seg_loss="bce_dice")
    torch.testing.assert_close(compute(stub, logits, aux, target, frame_mask, available),
                               seg + masked_dice(logits, target, frame_mask, available) - ramp(0.0) * 1.5)


def test_one_epoch_is_one_pass_over_the_clips():
    from nnunetv2_universal.training.echo_trainer import epoch_iterations
    assert epoch_iterations(8753 + 900 + 2580 + 3559, 5) == 3159  # Table 1's training clips at batch 5
    assert epoch_iterations(10, 5) == 2 and epoch_iterations(11, 5) == 3 and epoch_iterations(0, 5) == 1


def test_paper_augmentation_flips_left_right_never_time():
    """Frame t holds the value t everywhere but a marker column on the left: after the pipeline (no rotation or
    shear here) the frames keep their order, and the marker is sometimes on the right (flip), never elsewhere."""
    from nnunetv2_universal.echo.augmentation import InPlaneShear, paper_training_transforms
    transforms = paper_training_transforms((FRAMES, 16, 16), (-0.52, 0.52), (-0.2, 0.2), 0.0, 0.0, flip_axis=2,
                                           regions=None, ignore_label=None)
    image = torch.arange(FRAMES, dtype=torch.float32)[None, :, None, None].repeat(1, 1, 16, 16)
    image[..., 0] = 100
    seen = set()
    np.random.seed(0)
    for _ in range(20):
        out = transforms(image=image.clone(), segmentation=torch.zeros(1, FRAMES, 16, 16))["image"]
        assert torch.equal(out[0, :, 5, 5], torch.arange(FRAMES, dtype=torch.float32))  # time order kept
        seen.add("left" if bool((out[..., 0] == 100).all()) else "right" if bool((out[..., -1] == 100).all())
                 else "other")
    assert seen == {"left", "right"}
    sheared = InPlaneShear((0.3, 0.3))(image=image.clone(), segmentation=torch.ones(1, FRAMES, 16, 16))
    assert not torch.equal(sheared["image"], image) and sheared["segmentation"].min() == -1  # corners outside
    assert torch.allclose(sheared["image"][0, :, 8, 8], torch.arange(FRAMES, dtype=torch.float32))  # centre fixed
