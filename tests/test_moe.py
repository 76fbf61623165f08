"""Mixture of Experts (minillm.models.moe) against Hugging Face's Mixtral and Switch Transformers,
the teaching loop, hand-built capacity cases and the loss formulas."""

import dataclasses
import math

import pytest
import torch

from minillm.models import GPT, GPTConfig
from minillm.models.moe import (
    MoE,
    Routing,
    balance_loss,
    dispatch_order,
    expert_capacity,
    moe_reference,
    route,
    router_z_loss,
    routing_stats,
)

transformers = pytest.importorskip("transformers")
from transformers.models.mixtral import modeling_mixtral  # noqa: E402
from transformers.models.switch_transformers import modeling_switch_transformers as hf_switch  # noqa: E402


def _mixtral_block(E=4, k=2, d=32, f=48, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.MixtralConfig(hidden_size=d, intermediate_size=f, num_local_experts=E,
                                     num_experts_per_tok=k)
    hf = modeling_mixtral.MixtralSparseMoeBlock(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(std=0.3)
    ours = MoE(d, E, f, top_k=k, mlp="swiglu")
    with torch.no_grad():
        ours.router.copy_(hf.gate.weight)
        ours.experts.w_in.copy_(hf.experts.gate_up_proj[:, :f])
        ours.experts.w_up.copy_(hf.experts.gate_up_proj[:, f:])
        ours.experts.w_out.copy_(hf.experts.down_proj)
    return hf, ours


# ---- parity with Mixtral ---------------------------------------------------------------------
@pytest.mark.parametrize("E,k", [(4, 2), (8, 2), (8, 3)])
def test_mixtral_sparse_moe_block_outputs_and_gradients(E, k):
    hf, ours = _mixtral_block(E, k)
    x = torch.randn(3, 11, 32, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    a, b = hf(x), ours(x2).hidden
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(a)
    (a * g).sum().backward()
    (b * g).sum().backward()
    torch.testing.assert_close(x2.grad, x.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.router.grad, hf.gate.weight.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.experts.w_out.grad, hf.experts.down_proj.grad, atol=1e-5,
                               rtol=1e-4)


@pytest.mark.parametrize("k", [1, 2])
def test_balance_loss_is_mixtral_load_balancing_loss_over_top_k(k):
    """Mixtral's f counts every top-k choice over N (sums to k); ours divides by k."""
    torch.manual_seed(1)
    E, B, T = 6, 3, 10
    logits = torch.randn(B * T, E) * 2
    idx = torch.topk(logits, k).indices
    theirs = modeling_mixtral.load_balancing_loss_func((logits,), E, k)
    ours = balance_loss(torch.softmax(logits, -1), idx)
    torch.testing.assert_close(k * ours, theirs)
    # with a padding mask (B, T): padded tokens count in neither f nor P
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, :4] = 0
    mask[2, :7] = 0
    theirs = modeling_mixtral.load_balancing_loss_func((logits,), E, k, attention_mask=mask)
    ours = balance_loss(torch.softmax(logits, -1).reshape(B, T, E), idx.reshape(B, T, k), mask)
    torch.testing.assert_close(k * ours, theirs)
    # and the mask means "drop those rows"
    keep = mask.reshape(-1).bool()
    torch.testing.assert_close(ours, balance_loss(torch.softmax(logits[keep], -1), idx[keep]))


def test_mixtral_pools_layers_while_minillm_sums_them():
    torch.manual_seed(2)
    E, k = 4, 2
    layers = tuple(torch.randn(20, E) * (i + 1) for i in range(2))
    pooled = modeling_mixtral.load_balancing_loss_func(layers, E, k)
    cat = torch.cat(layers)
    torch.testing.assert_close(k * balance_loss(torch.softmax(cat, -1), torch.topk(cat, k).indices),
                               pooled)
    summed = sum(balance_loss(torch.softmax(lg, -1), torch.topk(lg, k).indices) for lg in layers)
    assert not torch.allclose(k * summed, pooled)  # the two conventions really differ


# ---- parity with Switch Transformers ---------------------------------------------------------
def _switch_config(E, capacity, d=16, f=24):
    return transformers.SwitchTransformersConfig(
        d_model=d, d_ff=f, num_experts=E, expert_capacity=capacity, router_bias=False,
        router_jitter_noise=0.0, dense_act_fn="gelu_new", num_layers=1, num_heads=2, d_kv=8)


@pytest.mark.parametrize("capacity_factor", [0.5, 1.0, 2.0])
def test_switch_top1_router_and_sparse_mlp_with_capacity(capacity_factor):
    torch.manual_seed(3)
    E, B, T, d, f = 4, 3, 16, 16, 24
    cap = expert_capacity(T, E, 1, capacity_factor)
    assert cap == math.ceil(capacity_factor * T / E)
    hf = hf_switch.SwitchTransformersSparseMLP(_switch_config(E, cap, d, f)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(std=0.5)
    ours = MoE(d, E, f, top_k=1, mlp="gelu", capacity_factor=capacity_factor)
    with torch.no_grad():
        ours.router.copy_(hf.router.classifier.weight)
        for e in range(E):
            ours.experts.w_in[e].copy_(hf.experts[f"expert_{e}"].wi.weight)
            ours.experts.w_out[e].copy_(hf.experts[f"expert_{e}"].wo.weight)
    x = torch.randn(B, T, d)
    onehot, top_p, logits = hf.router(x)
    r = ours.route(x)
    torch.testing.assert_close(r.logits, logits)
    kept_expert = torch.where(r.keep[..., 0], r.expert_index[..., 0], -1)
    theirs_expert = torch.where(onehot.sum(-1) > 0, onehot.argmax(-1), -1)
    assert torch.equal(kept_expert, theirs_expert)
    torch.testing.assert_close(r.weights, top_p)
    out = ours(x)
    torch.testing.assert_close(out.hidden, hf(x), atol=1e-5, rtol=1e-5)
    if capacity_factor < 1:
        assert routing_stats(out.routing, E)["dropped"] > 0


def test_balance_and_z_loss_match_switch_transformers():
    torch.manual_seed(4)
    G, S, E = 1, 40, 8
    logits = torch.randn(G, S, E) * 3
    probs = torch.softmax(logits, -1)
    idx = probs.argmax(-1)
    theirs = hf_switch.load_balancing_loss_func(probs, idx)
    torch.testing.assert_close(balance_loss(probs, idx[..., None]), theirs)
    # several groups: HF averages a per-group loss; ours pools the tokens (equal for G = 1)
    logits3 = torch.randn(3, S, E)
    torch.testing.assert_close(router_z_loss(logits3), hf_switch.router_z_loss_func(logits3))


# ---- the formulas -----------------------------------------------------------------------------
def test_balance_loss_equals_its_formula():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    idx = probs.argmax(-1, keepdim=True)           # experts 0, 0, 2, 0
    f = torch.tensor([3 / 4, 0, 1 / 4])
    P = probs.mean(0)
    torch.testing.assert_close(balance_loss(probs, idx), 3 * (f * P).sum())
    # uniform routing gives 1 at any k; a collapsed router gives E
    E = 4
    uniform = torch.full((8, E), 1 / E)
    for k in (1, 2):
        idx = torch.arange(8 * k).reshape(8, k) % E
        torch.testing.assert_close(balance_loss(uniform, idx), torch.tensor(1.0))
    collapsed = torch.zeros(8, E)
    collapsed[:, 0] = 1
    torch.testing.assert_close(balance_loss(collapsed, torch.zeros(8, 1, dtype=torch.long)),
                               torch.tensor(float(E)))


def test_router_z_loss_equals_its_formula():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    z = [math.log(math.e + math.e**2 + math.e**3), math.log(3.0)]
    torch.testing.assert_close(router_z_loss(logits), torch.tensor((z[0] ** 2 + z[1] ** 2) / 2))


def test_aux_losses_carry_their_coefficients_and_stats_add_up():
    torch.manual_seed(5)
    moe = MoE(16, 4, 32, top_k=2, capacity_factor=1.0, balance_coef=0.5, z_coef=0.25)
    x = torch.randn(2, 12, 16)
    out = moe(x)
    r = moe.route(x)
    torch.testing.assert_close(out.aux_losses["moe_balance"], 0.5 * balance_loss(r.probs, r.expert_index))
    torch.testing.assert_close(out.aux_losses["moe_z"], 0.25 * router_z_loss(r.logits))
    assert torch.equal(out.routing.expert_index, r.expert_index)
    s = routing_stats(out.routing, 4)
    torch.testing.assert_close(s["load"].sum(), torch.tensor(1.0))
    torch.testing.assert_close(s["dropped"], 1 - r.keep.float().mean())
    p = r.probs
    torch.testing.assert_close(s["entropy"], -(p * p.log()).sum(-1).mean())
    assert out.routing.splits is None and "sent_to" not in s  # one process: nothing exchanged
    assert not out.routing.logits.requires_grad and r.logits.requires_grad  # detached copy
    exchanged = routing_stats(dataclasses.replace(out.routing, splits=([5, 3], [4, 4])), 4)
    assert exchanged["sent_to"].tolist() == [5, 3] and exchanged["received_from"].tolist() == [4, 4]


# ---- capacity and dropping on hand-built cases -------------------------------------------------
def _pointing_moe(E, k, capacity_factor, d=None):
    """A router that sends a token x = one_hot(e) (+ a smaller one_hot(e')) to e (then e')."""
    d = d or E
    moe = MoE(d, E, 8, top_k=k, mlp="gelu", capacity_factor=capacity_factor)
    with torch.no_grad():
        moe.router.copy_(10 * torch.eye(E, d))
    return moe


def test_capacity_keeps_earlier_tokens_and_drops_later_ones_to_zero():
    E = 2
    moe = _pointing_moe(E, 1, capacity_factor=1.0)
    x = torch.zeros(1, 6, E)
    x[0, :, 0] = 1.0                                  # all six tokens want expert 0
    cap = expert_capacity(6, E, 1, 1.0)
    assert cap == 3
    out, _, routing = moe(x)
    keep = routing.keep[0, :, 0]
    assert keep.tolist() == [True, True, True, False, False, False]
    assert torch.all(out[0, 3:] == 0)                 # dropped: only the residual carries them
    assert torch.all(out[0, :3].abs().sum(-1) > 0)
    assert routing_stats(routing, E)["dropped"].item() == pytest.approx(0.5)
    torch.testing.assert_close(out, moe_reference(moe, x))
    moe.capacity_factor = None                        # no-drop mode
    out, _, routing = moe(x)
    assert torch.all(out.abs().sum(-1) > 0) and routing_stats(routing, E)["dropped"].item() == 0


def test_top2_first_choices_fill_before_second_choices():
    E = 3
    moe = _pointing_moe(E, 2, capacity_factor=0.5)   # ceil(0.5 * 2 * 4 / 3) = 2 slots
    x = torch.zeros(1, 4, E)
    x[0, 0, 1], x[0, 0, 0] = 1.0, 0.5                 # token 0: expert 1, then 0
    x[0, 1, 1], x[0, 1, 0] = 1.0, 0.5                 # token 1: expert 1, then 0
    x[0, 2, 0], x[0, 2, 2] = 1.0, 0.5                 # token 2: expert 0, then 2
    x[0, 3, 0], x[0, 3, 2] = 1.0, 0.5                 # token 3: expert 0, then 2
    r = moe(x).routing
    assert r.capacity == 2
    assert r.expert_index[0].tolist() == [[1, 0], [1, 0], [0, 2], [0, 2]]
    # expert 0 takes the first choices of tokens 2 and 3 before the second choices of 0 and 1
    assert r.keep[0].tolist() == [[True, False], [True, False], [True, True], [True, True]]
    torch.testing.assert_close(moe(x).hidden, moe_reference(moe, x))


def test_dispatch_order_sorts_kept_assignments_by_expert_then_token():
    # 2 sequences of 2 tokens, k = 2: tokens are rows 0-3 of the flattened batch
    index = torch.tensor([[[1, 0], [2, 1]], [[0, 2], [1, 0]]])
    weights = torch.tensor([[[0.6, 0.4], [0.7, 0.3]], [[0.9, 0.1], [0.5, 0.5]]])
    keep = torch.tensor([[[True, True], [True, False]], [[True, True], [True, True]]])
    r = Routing(weights.log(), weights, index, weights, keep, None)
    expert, token, weight = dispatch_order(r)
    assert expert.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert token.tolist() == [0, 2, 3, 0, 3, 1, 2]        # (token 1's choice of expert 1: dropped)
    assert weight.tolist() == pytest.approx([0.4, 0.9, 0.5, 0.6, 0.5, 0.7, 0.1])


def test_capacity_is_counted_per_sequence():
    torch.manual_seed(6)
    moe = MoE(16, 4, 24, top_k=2, capacity_factor=0.75)
    x = torch.randn(3, 10, 16)
    whole, _, routing = moe(x)
    assert routing_stats(routing, 4)["dropped"] > 0
    parts = torch.cat([moe(x[i:i + 1]).hidden for i in range(3)])
    torch.testing.assert_close(whole, parts)


def _random_moe(seed, k, cf, mlp, bias, shared):
    """A small MoE with a sharp random router and large expert weights, and an input."""
    torch.manual_seed(seed)
    moe = MoE(16, 4, 24, top_k=k, mlp=mlp, bias=bias, capacity_factor=cf, n_shared_expert=shared)
    with torch.no_grad():
        moe.router.normal_(std=1.0)
        for p in moe.experts.parameters():
            p.normal_(std=0.3)
    return moe, torch.randn(2, 9, 16)


@pytest.mark.parametrize("k,cf,mlp,bias,shared", [
    (1, None, "gelu", True, 0), (1, 1.0, "swiglu", False, 0), (2, None, "swiglu", True, 1),
    (2, 1.25, "gelu", False, 0), (2, 0.5, "swiglu", False, 2), (3, 1.0, "gelu", True, 1)])
def test_vectorised_dispatch_equals_the_per_token_loop(k, cf, mlp, bias, shared):
    moe, x = _random_moe(7, k, cf, mlp, bias, shared)
    fast, slow = moe(x).hidden, moe_reference(moe, x)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(fast)
    fast_grads = torch.autograd.grad((fast * g).sum(), list(moe.parameters()))
    slow_grads = torch.autograd.grad((slow * g).sum(), list(moe.parameters()))
    for a, b in zip(fast_grads, slow_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_route_is_a_pure_function_of_logits():
    logits = torch.tensor([[[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]]])
    r = route(logits, 2, capacity=None)
    p = torch.softmax(logits, -1)
    assert r.expert_index.tolist() == [[[0, 1], [1, 2]]]
    torch.testing.assert_close(r.weights[0, 0], p[0, 0, :2] / p[0, 0, :2].sum())
    r1 = route(logits, 1, capacity=None)             # top-1 keeps the raw probability (Switch)
    torch.testing.assert_close(r1.weights[..., 0], p.max(-1).values)


def test_router_runs_in_float32_under_bfloat16_autocast():
    moe = MoE(16, 4, 24)
    x = torch.randn(1, 5, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _, routing = moe(x)
    assert routing.logits.dtype == torch.float32 and y.shape == x.shape


def test_router_jitter_only_while_training():
    torch.manual_seed(8)
    moe = MoE(16, 4, 24, router_jitter=0.1)
    x = torch.randn(1, 5, 16)
    assert not torch.equal(moe.router_logits(x), moe.router_logits(x))
    moe.eval()
    assert torch.equal(moe.router_logits(x), moe.router_logits(x))


# ---- configuration errors ---------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(n_expert=4, top_k=5), "top_k=5 must be between 1 and n_expert=4"),
    (dict(n_expert=4, capacity_factor=0.0), "capacity_factor=0.0 must be > 0"),
    (dict(n_expert=4, capacity_factor=-1.0), "capacity_factor=-1.0 must be > 0"),
    (dict(n_expert=-1), "n_expert=-1 must be 0"),
    (dict(n_expert=4, moe_every=5), "moe_every=5 must be between 1 and n_layer=4"),
    (dict(n_expert=4, moe_balance_coef=-1.0), "moe_balance_coef=-1.0 must be >= 0"),
    (dict(n_expert=4, router_jitter=1.5), "router_jitter=1.5 must be in"),
    (dict(n_expert=4, moe_bias_rate=-0.1), "moe_bias_rate=-0.1 must be >= 0"),
])
def test_bad_moe_config_is_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(n_layer=4, **kwargs)


# ---- inside the GPT ---------------------------------------------------------------------------
def test_dense_model_is_unchanged_and_reports_no_aux():
    torch.manual_seed(9)
    cfg = GPTConfig(vocab_size=50, context_length=16, d_model=32, n_layer=2, n_head=2)
    model = GPT(cfg)
    assert not any("router" in k or "experts" in k for k in model.state_dict())
    x = torch.randint(0, 50, (2, 16))
    output = model(x, x)
    assert output.aux_losses == {} and output.routing == ()


def test_moe_every_and_aux_losses_sum_over_layers(tmp_path):
    torch.manual_seed(10)
    cfg = GPTConfig(vocab_size=50, context_length=16, d_model=32, n_layer=4, n_head=2, mlp="swiglu",
                    bias=False, n_expert=4, top_k=2, moe_every=2, expert_d_ff=32, capacity_factor=1.25)
    model = GPT(cfg)
    kinds = [type(b.mlp).__name__ for b in model.blocks]
    assert kinds == ["SwiGLU", "MoE", "SwiGLU", "MoE"]
    x = torch.randint(0, 50, (2, 16))
    layers = []  # each MoE layer's own losses, seen from outside by a hook
    hooks = [model.blocks[i].mlp.register_forward_hook(lambda m, i, o: layers.append(o.aux_losses))
             for i in (1, 3)]
    out = model(x, x)
    for h in hooks:
        h.remove()
    assert len(out.routing) == 2
    for key in ("moe_balance", "moe_z"):
        torch.testing.assert_close(out.aux_losses[key], layers[0][key] + layers[1][key])
    # 4 experts of which a token visits 2: active = total - 2 experts per MoE layer
    per_expert = 3 * 32 * 32
    assert model.num_params() - model.num_active_params() == 2 * 2 * per_expert
    model.save(tmp_path / "m")
    back = GPT.from_checkpoint(tmp_path / "m")
    torch.testing.assert_close(back(x).logits, model(x).logits)


def test_trainer_adds_the_aux_losses():
    from minillm.training import TrainConfig, Trainer

    torch.manual_seed(11)
    cfg = GPTConfig(vocab_size=20, context_length=8, d_model=16, n_layer=1, n_head=2,
                    n_expert=4, top_k=1, moe_balance_coef=1.0)
    tokens = torch.randint(0, 20, (400,))
    trainer = Trainer(GPT(cfg), tokens, config=TrainConfig(
        batch_size=4, max_steps=2, warmup_steps=0, lr=1e-3, device="cpu", progress=False,
        eval_interval=0, log_interval=1))
    trainer.fit()
    assert trainer.history[-1]["moe_balance"] >= 1.0 - 1e-6  # the minimum of E * sum f P is 1


def _mixtral(seed=0, k=2, **kw):
    torch.manual_seed(seed)
    cfg = transformers.MixtralConfig(
        vocab_size=71, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=k,
        max_position_embeddings=64, rms_norm_eps=1e-6, bos_token_id=0, eos_token_id=1,
        pad_token_id=2, **kw)
    model = transformers.MixtralForCausalLM(cfg).eval()
    with torch.no_grad():  # make norms and routers non-trivial so that they are really compared
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            elif "mlp.gate" in name:
                p.normal_(std=0.5)
    return model


def test_from_hf_mixtral_logits_and_aux_loss():
    hf = _mixtral()
    ours = GPT.from_hf_mixtral(hf).eval()
    c = ours.config
    assert (c.n_expert, c.top_k, c.capacity_factor, c.moe_every) == (4, 2, None, 1)
    x = torch.randint(3, 71, (3, 30))
    layers = []  # each MoE layer's own losses, seen from outside by a hook
    hooks = [b.mlp.register_forward_hook(lambda m, i, o: layers.append(o.aux_losses))
             for b in ours.blocks]
    with torch.no_grad():
        out = hf(x, output_router_logits=True)
        logits = ours(x).logits
    for h in hooks:
        h.remove()
    assert (out.logits - logits).abs().max().item() <= 1e-5
    # per layer, our balance term (times its converted coefficient) is Mixtral's loss times its coef
    coef = hf.config.router_aux_loss_coef
    for layer_logits, aux in zip(out.router_logits, layers, strict=True):
        theirs = modeling_mixtral.load_balancing_loss_func((layer_logits,), 4, 2)
        torch.testing.assert_close(aux["moe_balance"], coef * theirs)
        assert aux["moe_z"].item() == 0.0


def test_from_hf_mixtral_greedy_generation_through_the_kv_cache():
    from minillm.generation import generate

    hf = _mixtral(seed=1)
    ours = GPT.from_hf_mixtral(hf).eval()
    x = torch.randint(3, 71, (1, 7))
    ref = hf.generate(x, max_new_tokens=12, do_sample=False, eos_token_id=None)
    assert torch.equal(generate(ours, x, 12, do_sample=False), ref)
    assert torch.equal(generate(ours, x, 12, do_sample=False, use_cache=False), ref)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_from_hf_mixtral_keeps_mixtrals_renormalised_gate_for_every_k(k):
    # Mixtral renormalises its top-k weights for every k (top-1: weight 1); the course's own
    # models keep Switch's raw p_i at k = 1. The converter must carry Mixtral's convention.
    hf = _mixtral(seed=2 + k, k=k)
    ours = GPT.from_hf_mixtral(hf).eval()
    assert (ours.config.top_k, ours.config.moe_renormalize) == (k, True)
    x = torch.randint(3, 71, (2, 20))
    with torch.no_grad():
        ref, logits = hf(x).logits, ours(x).logits
    assert (ref - logits).abs().max().item() <= 1e-5
    prompt = x[:1, :6]
    greedy = hf.generate(prompt, max_new_tokens=10, do_sample=False, eos_token_id=None)
    from minillm.generation import generate
    assert torch.equal(generate(ours, prompt, 10, do_sample=False), greedy)
    if k == 1:  # Switch's convention on the same weights is really a different model
        switch = GPT.from_hf_mixtral(hf, moe_renormalize=None).eval()
        with torch.no_grad():
            assert (switch(x).logits - ref).abs().max().item() > 1e-3


def test_gate_convention_is_a_config_field_whose_default_keeps_switch_top1():
    assert GPTConfig(vocab_size=8, context_length=4, d_model=8, n_layer=1, n_head=1,
                     n_expert=2, top_k=1).moe_renormalize is None
    with pytest.raises(ValueError, match="moe_renormalize"):
        GPTConfig(vocab_size=8, context_length=4, d_model=8, n_layer=1, n_head=1, n_expert=2,
                  moe_renormalize="yes")
    logits = torch.tensor([[[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]]])
    p = torch.softmax(logits, -1)
    top1 = p.max(-1).values
    torch.testing.assert_close(route(logits, 1, None).weights[..., 0], top1)
    torch.testing.assert_close(route(logits, 1, None, renormalize=False).weights[..., 0], top1)
    assert torch.all(route(logits, 1, None, renormalize=True).weights == 1.0)
    assert torch.all(route(logits, 2, None, renormalize=False).weights.sum(-1) < 1.0)
    moe = MoE(16, 4, 24, top_k=1, renormalize=True)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(moe(x).hidden, moe_reference(moe, x), atol=1e-6, rtol=1e-6)


# ---- the grouped (GPU) dispatch path against the per-expert loop -------------------------------
@pytest.mark.parametrize("k,cf,mlp,bias,shared", [
    (1, None, "gelu", True, 0), (1, 1.0, "swiglu", False, 0), (2, None, "swiglu", True, 1),
    (2, 0.5, "gelu", False, 0), (3, 1.0, "swiglu", True, 1)])
def test_grouped_dispatch_equals_the_loop(k, cf, mlp, bias, shared):
    moe, x = _random_moe(9, k, cf, mlp, bias, shared)
    assert moe.dispatch_impl(x) == "loop"               # CPU default
    loop = moe(x)
    moe.impl = "grouped"
    grouped = moe(x)
    if cf is not None:
        assert routing_stats(loop.routing, 4)["dropped"] > 0   # dropped rows really exercised
    torch.testing.assert_close(grouped.hidden, loop.hidden, atol=1e-6, rtol=1e-6)
    for key in loop.aux_losses:
        torch.testing.assert_close(grouped.aux_losses[key], loop.aux_losses[key])
    g = torch.randn_like(loop.hidden)
    moe.impl = "loop"
    a = torch.autograd.grad((moe(x).hidden * g).sum(), list(moe.parameters()))
    moe.impl = "grouped"
    b = torch.autograd.grad((moe(x).hidden * g).sum(), list(moe.parameters()))
    for ga, gb in zip(a, b, strict=True):
        torch.testing.assert_close(gb, ga, atol=1e-5, rtol=1e-5)


def test_grouped_dispatch_compiles_as_one_graph_without_host_sync():
    # fullgraph=True fails on a graph break: the loop path's .tolist() and its per-expert
    # Python loop over data-dependent slices break the graph; the grouped path must not.
    # (bfloat16, the GPU path's dtype: grouped_mm's shape function asks for it when traced)
    torch.manual_seed(10)
    moe = MoE(16, 4, 24, top_k=2, capacity_factor=1.0, impl="grouped").to(torch.bfloat16)
    x = torch.randn(2, 8, 16, dtype=torch.bfloat16)
    compiled = torch.compile(moe, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x).hidden, moe(x).hidden)
    moe.impl = "loop"
    with pytest.raises(Exception):  # noqa: B017 - the graph break's exception type moves with torch
        torch.compile(moe, fullgraph=True, backend="aot_eager")(x)


def test_mixtral_with_a_short_sliding_window_is_refused():
    with pytest.raises(ValueError, match="sliding_window=8"):
        GPT.from_hf_mixtral(_mixtral(sliding_window=8))


# ---- auxiliary-loss-free balancing (DeepSeek-V3's selection bias) ------------------------------
def test_selection_bias_chooses_but_does_not_weigh():
    logits = torch.tensor([[[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]]])
    p = torch.softmax(logits, -1)
    bias = torch.tensor([0.0, 0.0, 1.0])               # makes expert 2 everyone's first choice
    r = route(logits, 1, None, bias=bias)
    assert r.expert_index[..., 0].tolist() == [[2, 2]]
    torch.testing.assert_close(r.weights[..., 0], p[..., 2])   # the unbiased p_i (Switch's g)
    r2 = route(logits, 2, None, bias=bias)
    assert r2.expert_index.tolist() == [[[2, 0], [2, 1]]]
    chosen = p[0].gather(-1, r2.expert_index[0])
    torch.testing.assert_close(r2.weights[0], chosen / chosen.sum(-1, keepdim=True))


def test_bias_update_is_deepseek_v3s_sign_rule_and_only_while_training():
    torch.manual_seed(3)
    moe = MoE(16, 4, 24, top_k=2, bias_rate=0.01)
    with torch.no_grad():
        moe.router.normal_(std=1.0)
    x = torch.randn(2, 9, 16)
    routing = moe.eval()(x).routing
    assert torch.all(moe.expert_bias == 0)               # evaluation leaves the bias alone
    load = torch.bincount(routing.expert_index.reshape(-1), minlength=4).float()
    moe.train()(x)
    expected = -0.01 * torch.sign(load - load.mean())    # overloaded -> down, idle -> up
    torch.testing.assert_close(moe.expert_bias, expected)
    assert (expected != 0).any()


def test_bias_balances_a_skewed_router_without_a_loss():
    # a router that sends most tokens to expert 0; over a stream of fresh batches the sign rule
    # evens the load out with no balance loss and no gradient step at all (bias off: it stays)
    def max_shares(rate):
        torch.manual_seed(4)
        moe = MoE(16, 4, 24, top_k=1, balance_coef=0.0, bias_rate=rate).train()
        with torch.no_grad():
            moe.router.normal_(std=0.5)
            moe.router[0] += 0.5                         # inputs below lean towards expert 0
        g = torch.Generator().manual_seed(0)
        return [routing_stats(moe(torch.randn(4, 64, 16, generator=g) + 0.5).routing,
                              4)["load"].max().item() for _ in range(200)]
    off, on = max_shares(0.0), max_shares(0.01)
    assert off[0] == on[0] > 0.6                         # the same start
    assert min(off[-50:]) > 0.5                          # no bias: still skewed
    assert sum(on[-50:]) / 50 < 0.35, on[-50:]           # even load is 0.25


def test_bias_is_saved_only_when_on_and_the_reference_loop_uses_it():
    assert "expert_bias" not in MoE(16, 4, 24).state_dict()   # old checkpoints keep loading
    moe, x = _random_moe(11, 2, 1.0, "swiglu", False, 0)
    on = MoE(16, 4, 24, top_k=2, capacity_factor=1.0, bias_rate=0.05)
    on.load_state_dict({**moe.state_dict(), "expert_bias": torch.tensor([0.3, -0.2, 0.0, 0.1])})
    assert "expert_bias" in on.state_dict()
    on.eval()
    torch.testing.assert_close(on(x).hidden, moe_reference(on, x), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(on(x).hidden, moe.eval()(x).hidden)   # the bias changed routing
    cfg = GPTConfig(vocab_size=50, context_length=16, d_model=16, n_layer=2, n_head=2,
                    n_expert=4, moe_bias_rate=1e-3)
    assert GPT(cfg).blocks[0].mlp.bias_rate == 1e-3
