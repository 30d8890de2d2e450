"""LLaDA-MoE-7B-A1B (inclusionAI) as a native transformers 5.x model, no remote code.

The published checkpoint ships remote code written for transformers 4.5x. This module re-states the
same math (checked against that code) with the published `config.json` field names and safetensors
key names, so `from_pretrained(<official dir>)` loads the real weights unchanged:

    model.embed_tokens.weight                                   lm_head.weight   model.norm.weight
    model.layers.{i}.input_layernorm.weight                     .post_attention_layernorm.weight
    model.layers.{i}.self_attn.{q,k,v,o}_proj.weight            .self_attn.{q,k}_norm.weight  [head_dim]
    model.layers.{i}.mlp.gate.weight                            [num_experts, hidden]
    model.layers.{i}.mlp.experts.{j}.{gate,up,down}_proj.weight
    (optional) model.layers.{i}.mlp.expert_bias, model.layers.{i}.shared_expert.*, dense
    model.layers.{i}.mlp.{gate,up,down}_proj.weight where moe_layer_freq[i] == 0

Semantics worth knowing (from the reference): attention is fully bidirectional (a masked-diffusion
LM has no causal mask); q/k RMSNorm acts per head; the router is a softmax over all experts whose
top-k probabilities are used *without* renormalisation (the reference hard-codes
``norm_topk_prob = False`` whatever the config says); an enabled expert bias is added to the
probabilities before top-k and, as in the reference, stays in the weights.

Routed experts are an `ExpertList`, so they compute through the project's expert seam.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.activations import ACT2FN
from transformers.modeling_outputs import CausalLMOutput

from advisor.models.experts import ExpertList

MODEL_TYPE = "llada"  # as published in inclusionAI/LLaDA-MoE-7B-A1B-{Base,Instruct}/config.json
MASK_TOKEN_ID = 156895
EOS_TOKEN_ID = 156892


class LLaDAMoEConfig(PretrainedConfig):
    """Field names and meanings of the published LLaDA-MoE `config.json` (defaults: the 7B-A1B model)."""

    model_type = MODEL_TYPE
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size: int = 157184,
        hidden_size: int = 2048,
        dense_intermediate_size: int = 8192,
        expert_intermediate_size: int = 1024,
        shared_expert_intermediate_size: int | None = None,
        num_hidden_layers: int = 16,
        num_attention_heads: int = 16,
        num_key_value_heads: int | None = None,
        hidden_act: str = "silu",
        max_position_embeddings: int = 8192,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        use_cache: bool = False,
        pad_token_id: int | None = EOS_TOKEN_ID,
        bos_token_id: int | None = None,
        eos_token_id: int | None = EOS_TOKEN_ID,
        mask_token_id: int = MASK_TOKEN_ID,
        tie_word_embeddings: bool = False,
        rope_theta: float = 50000.0,
        partial_rotary_factor: float = 1.0,
        attention_bias: bool = False,
        attention_dropout: float = 0.0,
        clip_qkv: float | None = None,
        num_experts_per_tok: int = 8,
        num_experts: int = 64,
        output_router_logits: bool = False,
        router_aux_loss_coef: float = 0.01,
        norm_topk_prob: bool | None = False,
        qk_layernorm: bool = True,
        moe_layer_freq: list[int] | None = None,
        moe_router_enable_expert_bias: bool | None = False,
        moe_router_score_function: str | None = "softmax",
        routed_scaling_factor: float = 1.0,
        router_num_group: int | None = None,
        router_topk_group: int | None = None,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.dense_intermediate_size = dense_intermediate_size
        self.expert_intermediate_size = expert_intermediate_size
        self.shared_expert_intermediate_size = shared_expert_intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.mask_token_id = mask_token_id
        self.rope_theta = rope_theta
        self.partial_rotary_factor = partial_rotary_factor
        self.attention_bias = attention_bias
        self.attention_dropout = attention_dropout
        self.clip_qkv = clip_qkv
        self.num_experts_per_tok = num_experts_per_tok
        self.num_experts = num_experts
        self.output_router_logits = output_router_logits
        self.router_aux_loss_coef = router_aux_loss_coef
        self.norm_topk_prob = norm_topk_prob
        self.qk_layernorm = qk_layernorm
        self.moe_layer_freq = list(moe_layer_freq) if moe_layer_freq is not None else [1] * num_hidden_layers
        if len(self.moe_layer_freq) != num_hidden_layers:
            raise ValueError(f"moe_layer_freq has {len(self.moe_layer_freq)} entries but num_hidden_layers is "
                             f"{num_hidden_layers}")
        self.moe_router_enable_expert_bias = moe_router_enable_expert_bias
        self.moe_router_score_function = moe_router_score_function
        self.routed_scaling_factor = routed_scaling_factor
        self.router_num_group = router_num_group
        self.router_topk_group = router_topk_group
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )


# ----------------------------------------------------------------------------------------------
# Building blocks shared with llada2.py
# ----------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 (as the reference does), weight applied in the input dtype."""

    def __init__(self, size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class SwiGLU(nn.Module):
    """down(act(gate x) * up x) - one expert, the dense MLP, or a shared expert."""

    def __init__(self, hidden: int, intermediate: int, act: str = "silu"):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)
        self.act_fn = ACT2FN[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def rope_cos_sin(
    positions: torch.Tensor, rotary_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Default (unscaled) RoPE tables [B, L, rotary_dim], computed on the fly: no buffers to load."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, rotary_dim, 2, device=positions.device, dtype=torch.float32) / rotary_dim)
    )
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first `rotary_dim` channels of x [B, heads, L, D] (rotate-half convention)."""
    d = cos.shape[-1]
    cos, sin = cos[:, None], sin[:, None]
    rot, rest = x[..., :d], x[..., d:]
    r1, r2 = rot[..., : d // 2], rot[..., d // 2 :]
    rotated = rot * cos + torch.cat((-r2, r1), dim=-1) * sin
    return torch.cat((rotated, rest), dim=-1)


def sdpa_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Turn a [B, L] keep-mask or a [B, 1|H, Lq, Lk] bool/additive mask into SDPA's attn_mask."""
    if attention_mask is None:
        return None
    if attention_mask.dim() == 2:
        return attention_mask[:, None, None, :].bool()
    if attention_mask.dtype == torch.bool:
        return attention_mask
    if attention_mask.is_floating_point():
        return attention_mask.to(dtype)
    return attention_mask.bool()


def rotary_dim(head_dim: int, partial_rotary_factor: float | None) -> int:
    factor = partial_rotary_factor if partial_rotary_factor and partial_rotary_factor > 0 else 1.0
    return int(head_dim * factor) // 2 * 2


# ----------------------------------------------------------------------------------------------
# LLaDA-MoE layers
# ----------------------------------------------------------------------------------------------


class LLaDAMoEAttention(nn.Module):
    """Bidirectional multi-head attention with optional per-head q/k RMSNorm and GQA."""

    def __init__(self, config: LLaDAMoEConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.hidden_size // self.num_heads
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)
        if config.qk_layernorm:
            self.q_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)

    def forward(
        self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None
    ) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(b, n, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(b, n, self.num_kv_heads, self.head_dim)
        if self.config.qk_layernorm:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.config.clip_qkv is not None:
            c = self.config.clip_qkv
            q, k, v = q.clamp(-c, c), k.clamp(-c, c), v.clamp(-c, c)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        q, k = apply_rope(q, *cos_sin), apply_rope(k, *cos_sin)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.config.attention_dropout if self.training else 0.0,
            enable_gqa=self.num_kv_heads != self.num_heads,
        )
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


class LLaDAMoESparseMoeBlock(nn.Module):
    """Softmax top-k router (`gate`) over a list of SwiGLU experts that compute through the seam."""

    def __init__(self, config: LLaDAMoEConfig):
        super().__init__()
        self.num_experts = config.num_experts
        self.top_k = config.num_experts_per_tok
        self.gate = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        act = config.hidden_act
        self.experts = ExpertList(
            [
                SwiGLU(config.hidden_size, config.expert_intermediate_size, act)
                for _ in range(self.num_experts)
            ],
            ACT2FN[act],
        )
        # Project extension, off for the official checkpoints (whose code ignores norm_topk_prob): the bundled
        # small model renormalises its top-k weights so experts carry full weight while it trains briefly.
        self.renormalize_top_k = bool(getattr(config, "advisor_renormalize_top_k", False))
        if config.moe_router_enable_expert_bias:
            self.register_buffer("expert_bias", torch.zeros(config.num_experts))
        else:
            self.expert_bias = None

    def route(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """hidden [T, H] -> (router logits [T, E], top-k index [T, k], top-k weights [T, k] float32)."""
        logits = self.gate(hidden)
        probs = F.softmax(logits, dim=-1, dtype=torch.float32)
        if self.expert_bias is not None:
            probs = probs + self.expert_bias
        weights, index = torch.topk(probs, self.top_k, dim=-1)
        if self.renormalize_top_k:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return logits, index, weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        hidden = x.reshape(-1, shape[-1])
        _, index, weights = self.route(hidden)
        return self.experts(hidden, index, weights.to(hidden.dtype)).reshape(shape)


class LLaDAMoEDecoderLayer(nn.Module):
    def __init__(self, config: LLaDAMoEConfig, layer_idx: int):
        super().__init__()
        is_moe = config.moe_layer_freq[layer_idx] != 0
        self.self_attn = LLaDAMoEAttention(config)
        self.mlp = (
            LLaDAMoESparseMoeBlock(config)
            if is_moe
            else SwiGLU(config.hidden_size, config.dense_intermediate_size, config.hidden_act)
        )
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        if is_moe and config.shared_expert_intermediate_size:
            self.shared_expert = SwiGLU(
                config.hidden_size, config.shared_expert_intermediate_size, config.hidden_act
            )
        else:
            self.shared_expert = None

    def forward(self, x, cos_sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos_sin, mask)
        h = self.post_attention_layernorm(x)
        out = self.mlp(h)
        if self.shared_expert is not None:
            out = out + self.shared_expert(h)
        return x + out


class LLaDAMoEPreTrainedModel(PreTrainedModel):
    config_class = LLaDAMoEConfig
    base_model_prefix = "model"
    _no_split_modules = ["LLaDAMoEDecoderLayer"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, LLaDAMoESparseMoeBlock) and module.expert_bias is not None:
            from transformers import initialization as init

            init.zeros_(module.expert_bias)


class LLaDAMoEModel(LLaDAMoEPreTrainedModel):
    """Embeddings + decoder stack + final norm (the `model.` prefix of the checkpoint)."""

    def __init__(self, config: LLaDAMoEConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LLaDAMoEDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None].expand_as(
                input_ids
            )
        head_dim = self.config.hidden_size // self.config.num_attention_heads
        cos_sin = rope_cos_sin(
            position_ids,
            rotary_dim(head_dim, self.config.partial_rotary_factor),
            self.config.rope_theta,
            x.dtype,
        )
        mask = sdpa_mask(attention_mask, x.dtype)
        for layer in self.layers:
            x = layer(x, cos_sin, mask)
        return self.norm(x)


class LLaDAMoEModelLM(LLaDAMoEPreTrainedModel):
    """LLaDA-MoE with its LM head: `model(input_ids, attention_mask=None).logits` [B, L, V]."""

    def __init__(self, config: LLaDAMoEConfig):
        super().__init__(config)
        self.model = LLaDAMoEModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        logits_to_keep: int | slice | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutput:
        """`logits_to_keep` (as transformers'): the positions to compute logits for - the last n (0: all), a slice
        or an index tensor of them; the decoding samplers ask only for the block they can commit."""
        hidden = self.model(input_ids, attention_mask=attention_mask, position_ids=position_ids)
        return CausalLMOutput(logits=self.lm_head(hidden[:, kept_positions(logits_to_keep)]))


def kept_positions(logits_to_keep: int | slice | torch.Tensor) -> slice | torch.Tensor:
    """The index of the positions `logits_to_keep` keeps (transformers' convention, plus a slice)."""
    return slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep


def _register() -> None:
    """Make `Auto*.from_pretrained(dir)` resolve the published model_type to these classes."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if MODEL_TYPE not in CONFIG_MAPPING:
        AutoConfig.register(MODEL_TYPE, LLaDAMoEConfig)
    for auto in (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM):
        try:
            auto.register(LLaDAMoEConfig, LLaDAMoEModelLM)
        except ValueError:  # already registered (module re-imported)
            pass


_register()
