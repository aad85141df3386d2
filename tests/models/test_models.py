"""SUAN / LightSUAN: grades, forward/backward, parallel scoring, target independence."""
import pytest
import torch

from suan import GRADES, SUAN, LightSUAN, TokenLayout, config_for_grade, default_schema, random_batch
from suan.batch import Batch, collate
from suan.config import light_pattern
from suan.uab import UnifiedAttentionBlock


def test_grade_table_spans_three_orders_of_magnitude():
    assert len(GRADES) >= 6
    counts = [SUAN(config_for_grade(g)).parameter_counts()["non_embedding"] for g in GRADES]
    assert counts == sorted(counts)
    assert counts[-1] / counts[0] >= 1000


@pytest.mark.parametrize("grade", [g.name for g in GRADES])
@pytest.mark.parametrize("light", [False, True])
def test_every_grade_runs_forward_and_backward(grade, light):
    torch.manual_seed(0)
    cfg = config_for_grade(grade, light=light, max_len=24)
    model = (LightSUAN if light else SUAN)(cfg)
    batch = random_batch(cfg.schema, 3, 24, 1, min_len=0, seed=1)
    logits = model(batch)
    assert logits.shape == (3,) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.rab.w_pos.grad.abs().sum() > 0 and model.rab.w_time.grad.abs().sum() > 0


def _single_candidate_batches(batch: Batch):
    """K one-candidate batches of sample 0 of ``batch``."""
    sample = batch.sample(0)
    out = []
    for t in range(sample["targets"].shape[0]):
        s = dict(sample)
        s["targets"] = sample["targets"][t:t + 1]
        s["labels"] = None
        out.append(collate([s]))
    return out


@pytest.mark.parametrize("light", [False, True])
def test_k_candidates_in_one_pass_equal_k_single_passes(light):
    torch.manual_seed(0)
    cfg = config_for_grade("g1", light=light, max_len=64)
    model = (LightSUAN if light else SUAN)(cfg).eval()
    batch = random_batch(cfg.schema, 1, 64, 17, min_len=50, seed=3)
    with torch.no_grad():
        one_pass = model(batch)
        singles = torch.cat([model(b) for b in _single_candidate_batches(batch)])
    assert (one_pass - singles).abs().max() < 1e-5


def test_lightsuan_score_equals_single_passes():
    torch.manual_seed(0)
    cfg = config_for_grade("g1", light=True, max_len=128)
    model = LightSUAN(cfg).eval()
    batch = random_batch(cfg.schema, 1, 128, 1, min_len=100, seed=5)
    history = batch.sample(0)
    candidates = torch.randint(1, 100, (40, len(cfg.schema.target_fields)))
    scores = model.score(history, candidates)
    assert scores.shape == (40,)
    with torch.no_grad():
        for t in range(0, 40, 7):
            s = dict(history, targets=candidates[t:t + 1], labels=None)
            single = model(collate([s]))
            assert (single - scores[t]).abs().max() < 1e-5


def test_uab_behavior_outputs_do_not_depend_on_targets():
    torch.manual_seed(0)
    cfg = config_for_grade("g1", max_len=32, dropout=0.0)
    model = SUAN(cfg).eval()
    block = model.blocks[0]
    assert isinstance(block, UnifiedAttentionBlock)
    batch = random_batch(cfg.schema, 4, 32, 3, min_len=1, seed=7)
    other = Batch(**{**batch.__dict__, "targets": torch.randint(1, 50, batch.targets.shape)})
    outs = []
    with torch.no_grad():
        for b in (batch, other):
            layout = TokenLayout.build(b)
            feats, _ = model.encode_features(b)
            x = model.embeddings(b, layout)
            outs.append(block(x, feats, layout)[layout.behavior_rows])
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)


def test_lightsuan_requires_pattern_and_uses_it():
    with pytest.raises(ValueError, match="cfg"):
        LightSUAN(config_for_grade("g0"))
    m = LightSUAN(config_for_grade("g2", light=True))
    p = light_pattern(m.cfg.max_len)
    assert m.blocks[0].attn.pattern == p and p.sparse


def test_shared_relative_bias_across_layers():
    m = SUAN(config_for_grade("g3"))
    assert all(b.attn.rab is m.rab for b in m.blocks)
    names = [n for n, _ in m.named_parameters() if "w_pos" in n]
    assert len(names) == 1


def test_dense_features_imputation_and_missing_values():
    cfg = config_for_grade("g0")
    m = SUAN(cfg).eval()
    b = random_batch(cfg.schema, 4, 8, 1, seed=2)
    b.dense[:] = 0.0  # everything missing: the learned imputation takes over
    assert torch.isfinite(m(b)).all()


def test_config_roundtrip():
    cfg = config_for_grade("g2", light=True)
    from suan.config import ModelConfig
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.schema == default_schema()


@pytest.mark.parametrize("ablation", [{"use_time_bias": False}, {"use_cross_attention": False},
                                      {"use_msgate": False}, {"num_layers": 1}])
def test_ablations_train_and_score_like_the_full_model(ablation):
    """Each ablation of SUAN runs forward/backward, and its cached scoring equals one pass."""
    from suan.cache import BehaviorCache

    torch.manual_seed(0)
    cfg = config_for_grade("g0", light=True, max_len=24, dropout=0.0, **ablation)
    model = LightSUAN(cfg)
    batch = random_batch(cfg.schema, 4, 24, 2, seed=1)
    model(batch).sum().backward()
    if not ablation.get("use_time_bias", True):
        assert model.rab.w_time is None
    if not ablation.get("use_cross_attention", True):
        assert not hasattr(model.blocks[0], "cross")
    model.eval()
    h = random_batch(cfg.schema, 1, 24, 1, min_len=10, seed=2).sample(0)
    cands = random_batch(cfg.schema, 5, 1, 1, seed=3).targets
    cached = model.score(h, cands, cache=BehaviorCache(model))
    assert torch.allclose(cached, model.score(h, cands), atol=1e-5)


@pytest.mark.parametrize("order", ["grouped", "shuffled"])
def test_feature_cross_attention_padded_form_equals_gathered_form(order):
    """The CPU path (tokens padded per sample) and the GPU path (keys gathered per token) agree in
    output and every gradient, with empty samples; an ungrouped token order falls back to gathering."""
    from suan.uab import FeatureCrossAttention

    torch.manual_seed(0)
    m = FeatureCrossAttention(32, 4).double()
    seq = torch.repeat_interleave(torch.arange(6), torch.tensor([3, 0, 7, 1, 5, 0]))
    if order == "shuffled":
        seq = seq[torch.randperm(seq.numel())]
    T = seq.numel()
    x = torch.randn(T, 32, dtype=torch.double, requires_grad=True)
    feats = torch.randn(6, 5, 32, dtype=torch.double, requires_grad=True)
    weights = [x, feats, m.q_proj.weight, m.k_proj.weight, m.v_proj.weight]

    def run(form):
        q = m.q_proj(x).view(T, 4, 8)
        k, v = (p(feats).view(6, 5, 4, 8) for p in (m.k_proj, m.v_proj))
        out = getattr(m, form)(q, k, v, seq)
        return out, torch.autograd.grad((out ** 2).sum() + out.sum(), weights)

    gathered, g_grads = run("_gathered")
    padded, p_grads = run("_padded") if order == "grouped" else run("_gathered")
    torch.testing.assert_close(padded, gathered)
    for a, b in zip(p_grads, g_grads):
        torch.testing.assert_close(a, b)
    # the module itself picks a path and gives the same answer
    torch.testing.assert_close(m(x, feats, seq), m.o_proj(gathered.reshape(T, 32)))
