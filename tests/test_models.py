from __future__ import annotations

import numpy as np
import pytest
import torch

from mmfer.config import ModelConfig
from mmfer.data import pad, reduce_frames
from mmfer.models import build_model
from mmfer.models.blstm import BLSTM, PackedBLSTM
from mmfer.models.fusion import GMU
from mmfer.models.pooling import ContextAttention


def _batch(lengths, dim=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    arrays = [torch.randn(n, dim, generator=g).numpy() for n in lengths]
    return arrays, *pad(arrays)


@pytest.mark.parametrize("layers", [1, 2])
def test_blstm_padding_invariance_and_equals_packed(layers):
    torch.manual_seed(0)
    arrays, x, lengths = _batch([7, 3, 12, 1])
    m = BLSTM(5, 4, layers).eval()
    out, mask = m(x, lengths)
    for i, a in enumerate(arrays):
        alone, _ = m(torch.from_numpy(a)[None], torch.tensor([len(a)]))
        assert torch.allclose(out[i, : len(a)], alone[0], atol=1e-6)
        assert torch.all(out[i, len(a):] == 0) and mask[i].sum() == len(a)
    # same numbers as the packed reference, given the same weights
    ref = PackedBLSTM(5, 4, layers).eval()
    with torch.no_grad():
        for layer in range(layers):
            for direction, mod in (("", m.fwd[layer]), ("_reverse", m.bwd[layer])):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(ref.lstm, f"{name}_l{layer}{direction}").copy_(getattr(mod, f"{name}_l0"))
    assert torch.allclose(ref(x, lengths), out, atol=1e-6)


def test_attention_weights_sum_to_one_and_ignore_padding():
    torch.manual_seed(0)
    _, x, lengths = _batch([6, 2, 9], dim=8)
    mask = torch.arange(9)[None] < lengths[:, None]
    att = ContextAttention(8, 16, heads=3)
    pooled, w = att(x, mask)
    assert pooled.shape == (3, 24) and w.shape == (3, 3, 9)
    assert torch.allclose(w.sum(-1), torch.ones(3, 3), atol=1e-6)
    assert torch.all(w[~mask.unsqueeze(1).expand_as(w)] == 0)
    # garbage in the padding changes nothing
    x2 = x.clone()
    x2[~mask] = 1e3
    assert torch.allclose(att(x2, mask)[0], pooled, atol=1e-5)


def test_gmu_equals_its_formula():
    torch.manual_seed(0)
    gmu = GMU(6, 4, 5)
    a, l = torch.randn(3, 6), torch.randn(3, 4)  # noqa: E741
    h, z = gmu(a, l)
    z_ref = torch.sigmoid(torch.cat([a, l], -1) @ gmu.w_z.weight.T)
    h_ref = z_ref * torch.tanh(a @ gmu.w_a.weight.T) + (1 - z_ref) * torch.tanh(l @ gmu.w_l.weight.T)
    assert torch.allclose(z, z_ref) and torch.allclose(h, h_ref)
    assert ((z > 0) & (z < 1)).all()


@pytest.mark.parametrize("name", ["audio", "text", "mmmf", "concat", "late"])
@pytest.mark.parametrize("pooling", ["attention", "mean", "last"])
def test_models_padding_invariant_and_report_what_analysis_needs(name, pooling):
    torch.manual_seed(0)
    cfg = ModelConfig(hidden=6, pooling=pooling, heads=2, attention_dim=8, fusion_dim=7)
    dims = {"acoustic": 5, "lexical": 4, "functionals": 7, "pooled": 6, "sentence": 4, "context": 4}
    model = build_model(name, dims, 4, cfg).eval()
    aa, xa, la = _batch([10, 4, 7], 5, seed=1)
    al, xl, ll = _batch([3, 5, 2], 4, seed=2)
    af, xf, lf = _batch([1, 1, 1], 7, seed=3)
    ac, xc, lc = _batch([1, 1, 1], 4, seed=4)
    ap, xp, lp = _batch([1, 1, 1], 6, seed=5)
    full = {"acoustic": (aa, xa, la), "lexical": (al, xl, ll), "functionals": (af, xf, lf), "context": (ac, xc, lc),
            "sentence": (ac, xc, lc), "pooled": (ap, xp, lp)}
    kinds = model.kinds
    out = model({k: full[k][1] for k in kinds}, {k: full[k][2] for k in kinds})
    assert out["logits"].shape == (3, 4)
    alone = model({k: torch.from_numpy(full[k][0][1])[None] for k in kinds}, {k: full[k][2][1:2] for k in kinds})
    assert torch.allclose(out["logits"][1], alone["logits"][0], atol=1e-5)
    assert set(out["attention"]) == {k for k in kinds if k in ("acoustic", "lexical")}  # sequences only
    for w in out["attention"].values():
        assert torch.allclose(w.sum(-1), torch.ones_like(w.sum(-1)), atol=1e-5)
    assert ("gate" in out) == (name == "mmmf")


def test_reduce_frames():
    a = np.arange(14, dtype=np.float32).reshape(7, 2)
    r = reduce_frames(a, 3)
    assert r.shape == (3, 2) and r[0].tolist() == [2, 3] and r[2].tolist() == [12, 13]


def _fused_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    dims = {"acoustic": 5, "lexical": 4, "functionals": 7, "pooled": 6, "sentence": 4, "context": 4}
    lengths = {"acoustic": torch.tensor([6, 3, 4]), "lexical": torch.tensor([2, 4, 3])}
    inputs = {k: torch.randn(3, int(lengths[k].max()) if k in lengths else 1, d, generator=g) for k, d in dims.items()}
    return dims, inputs, {k: lengths.get(k, torch.ones(3, dtype=torch.long)) for k in dims}


def test_stacked_experts_start_as_their_sum():
    """model.stack_experts: the fused model starts as the sum of the closed-form experts' scores."""
    torch.manual_seed(0)
    dims, x, n = _fused_inputs()
    model = build_model("mmmf", dims, 4, ModelConfig(hidden=6, attention_dim=8, fusion_dim=7, stack_experts=True))
    assert model.expert_kinds == ["functionals", "pooled", "sentence"]
    model.start_from_prefit()
    out = model.eval()(x, n)["logits"]
    experts = sum(model.encoders[k](x[k], None)[0] for k in ("functionals", "pooled", "sentence"))
    assert torch.allclose(out, experts, atol=1e-6)
    assert build_model("mmmf", dims, 4, ModelConfig(hidden=6)).expert_scale is None  # the default: off


def test_auxiliary_heads_and_modality_dropout():
    from mmfer.models.nets import drop_modality

    torch.manual_seed(0)
    dims, x, n = _fused_inputs()
    model = build_model("mmmf", dims, 4, ModelConfig(hidden=6, fusion_dim=7, aux_weight=0.5, modality_dropout=0.5))
    out = model.train()(x, n)
    assert set(out["aux_logits"]) == {"audio", "text"} and out["aux_logits"]["audio"].shape == (3, 4)
    assert build_model("text", dims, 4, ModelConfig(aux_weight=0.5)).aux_heads is None  # one modality: none
    v = {"audio": torch.ones(2000, 3), "text": torch.ones(2000, 2)}
    d = drop_modality(v, 0.4)
    lost_a, lost_t = (d["audio"].sum(1) == 0), (d["text"].sum(1) == 0)
    assert not (lost_a & lost_t).any()  # never both
    assert abs(float((lost_a | lost_t).float().mean()) - 0.4) < 0.05 and abs(float(lost_a.float().mean()) - 0.2) < 0.04
    assert ((d["audio"] == 0) | (d["audio"] == 1)).all()


def test_modality_dropout_is_the_fused_default_and_only_acts_while_training():
    dims, x, n = _fused_inputs()
    assert build_model("mmmf", dims, 4, ModelConfig()).modality_dropout == 0.5  # the default (benchmarks/options.py)
    assert build_model("text", dims, 4, ModelConfig()).modality_dropout == 0.0  # one modality: nothing to drop
    no_other = {"hidden": 6, "fusion_dim": 7, "dropout": 0.0, "input_dropout": 0.0, "vector_dropout": 0.0}

    def outputs(p: float, train: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = build_model("mmmf", dims, 4, ModelConfig(**no_other, modality_dropout=p)).train(train)
        with torch.no_grad():
            return [model(x, n)["logits"] for _ in range(8)]

    def all_equal(runs: list[torch.Tensor]) -> bool:
        return all(torch.equal(runs[0], r) for r in runs[1:])

    assert all_equal(outputs(0.5, train=False))  # inference: both modalities, always
    assert all_equal(outputs(0.0, train=True))  # off: training is deterministic here
    assert not all_equal(outputs(0.5, train=True))  # on: some utterances lose a modality


def test_a_checkpoint_that_no_longer_fits_is_refused_in_one_line(tmp_path):
    from mmfer import runs
    from mmfer.errors import MmferError

    dims, _, _ = _fused_inputs()
    cfg = ModelConfig(hidden=6, fusion_dim=7)
    runs.save_checkpoint(tmp_path / "m.pt", build_model("mmmf", dims, 4, cfg), cfg, list("abcd"), dims, {}, {})
    assert runs.load_checkpoint(tmp_path / "m.pt")[1]["model"] == "mmmf"  # intact: loads
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    ckpt["state_dict"]["expert_scale"] = torch.ones(2)  # written by a model with a part this one lacks
    torch.save(ckpt, tmp_path / "m.pt")
    with pytest.raises(MmferError, match=r"does not fit this version's 'mmmf' model \(.*expert_scale.*\); retrain"):
        runs.load_checkpoint(tmp_path / "m.pt")
