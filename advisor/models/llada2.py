"""LLaDA2.0 (inclusionAI/LLaDA2.0-mini, Bailing-MoE-v2 based) as a native transformers 5.x model.

Same aim as `llada_moe.py`: the published `config.json` fields (model_type ``llada2_moe``) and
safetensors key names, without remote code:

    model.word_embeddings.weight                              lm_head.weight   model.norm.weight
    model.layers.{i}.input_layernorm.weight                   .post_attention_layernorm.weight
    model.layers.{i}.attention.query_key_value.weight         [(H + 2*KV) * head_dim, hidden]
    model.layers.{i}.attention.{query,key}_layernorm.weight   [head_dim]
    model.layers.{i}.attention.dense.weight                   (output projection)
    model.layers.{i}.mlp.{gate,up,down}_proj.weight           for i < first_k_dense_replace (dense)
    model.layers.{i}.mlp.gate.weight                          [num_experts, hidden] - raw Parameter
    model.layers.{i}.mlp.gate.expert_bias                     [num_experts]         - buffer
    model.layers.{i}.mlp.experts.{j}.{gate,up,down}_proj.weight
    model.layers.{i}.mlp.shared_experts.{gate,up,down}_proj.weight

Router semantics (from the reference `LLaDA2MoeGate`): sigmoid scores in float32; selection uses
scores + expert_bias, restricted to the `topk_group` best of `n_group` groups (a group's score is
the sum of its two best biased scores); the weights are the *unbiased* sigmoid scores of the chosen
experts, renormalised to sum 1 (when top_k > 1) and multiplied by `routed_scaling_factor`.
Attention: bidirectional without a mask; the block-causal decoding mask is passed in by
`samplers.llada2_generate` (a [B, 1, L, L] bool mask).
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
from advisor.models.llada_moe import (
    RMSNorm,
    SwiGLU,
    apply_rope,
    kept_positions,
    rope_cos_sin,
    rotary_dim,
    sdpa_mask,
)

MODEL_TYPE = "llada2_moe"  # as published in inclusionAI/LLaDA2.0-mini/config.json
MASK_TOKEN_ID = 156895
EOS_TOKEN_ID = 156892


class LLaDA2MoeConfig(PretrainedConfig):
    """Field names of the published LLaDA2.0 `config.json` (defaults: LLaDA2.0-mini)."""

    model_type = MODEL_TYPE

    def __init__(
        self,
        vocab_size: int = 157184,
        hidden_size: int = 2048,
        intermediate_size: int = 5120,
        num_hidden_layers: int = 20,
        num_attention_heads: int = 16,
        num_key_value_heads: int = 4,
        head_dim: int | None = None,
        hidden_act: str = "silu",
        use_qkv_bias: bool = False,
        use_qk_norm: bool = True,
        use_bias: bool = False,
        rms_norm_eps: float = 1e-6,
        norm_head: bool = False,
        tie_word_embeddings: bool = False,
        embedding_dropout: float = 0.0,
        attention_dropout: float = 0.0,
        output_dropout: float = 0.0,
        initializer_range: float = 0.02,
        max_position_embeddings: int = 32768,
        rope_theta: float = 600000.0,
        partial_rotary_factor: float = 0.5,
        use_cache: bool = False,
        pad_token_id: int | None = EOS_TOKEN_ID,
        eos_token_id: int | None = EOS_TOKEN_ID,
        mask_token_id: int = MASK_TOKEN_ID,
        num_experts: int = 256,
        num_shared_experts: int | None = 1,
        num_experts_per_tok: int = 8,
        n_group: int = 8,
        topk_group: int = 4,
        routed_scaling_factor: float = 2.5,
        moe_intermediate_size: int = 512,
        first_k_dense_replace: int = 1,
        norm_topk_prob: bool = True,
        score_function: str = "sigmoid",
        moe_router_enable_expert_bias: bool = True,
        router_dtype: str = "fp32",
        output_router_logits: bool = False,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.head_dim = head_dim or hidden_size // num_attention_heads
        self.hidden_act = hidden_act
        self.use_qkv_bias = use_qkv_bias
        self.use_qk_norm = use_qk_norm
        self.use_bias = use_bias
        self.rms_norm_eps = rms_norm_eps
        self.norm_head = norm_head
        self.embedding_dropout = embedding_dropout
        self.attention_dropout = attention_dropout
        self.output_dropout = output_dropout
        self.initializer_range = initializer_range
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.partial_rotary_factor = partial_rotary_factor
        self.use_cache = use_cache
        self.mask_token_id = mask_token_id
        self.num_experts = num_experts
        self.num_shared_experts = num_shared_experts
        self.num_experts_per_tok = num_experts_per_tok
        self.n_group = n_group
        self.topk_group = topk_group
        self.routed_scaling_factor = routed_scaling_factor
        self.moe_intermediate_size = moe_intermediate_size
        self.first_k_dense_replace = first_k_dense_replace
        self.norm_topk_prob = norm_topk_prob
        self.score_function = score_function
        self.moe_router_enable_expert_bias = moe_router_enable_expert_bias
        self.router_dtype = router_dtype
        self.output_router_logits = output_router_logits
        super().__init__(
            pad_token_id=pad_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )


class LLaDA2MoeGate(nn.Module):
    """Grouped sigmoid router with a selection-only expert bias (`weight` is a raw Parameter)."""

    def __init__(self, config: LLaDA2MoeConfig):
        super().__init__()
        if config.num_experts % config.n_group:
            raise ValueError(f"num_experts {config.num_experts} is not divisible by n_group {config.n_group}")
        self.top_k = config.num_experts_per_tok
        self.num_experts = config.num_experts
        self.n_group = config.n_group
        self.topk_group = config.topk_group
        self.routed_scaling_factor = config.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(config.num_experts, config.hidden_size))
        self.register_buffer("expert_bias", torch.zeros(config.num_experts))

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """hidden [T, H] -> (top-k index [T, k], top-k weights [T, k] float32, router logits [T, E])."""
        logits = F.linear(hidden.float(), self.weight.float())
        scores = torch.sigmoid(logits)
        biased = scores + self.expert_bias.float()
        t = biased.shape[0]
        grouped = biased.view(t, self.n_group, -1)
        group_score = grouped.topk(min(2, grouped.shape[-1]), dim=-1).values.sum(dim=-1)
        keep_groups = group_score.topk(self.topk_group, dim=-1).indices
        group_mask = torch.zeros_like(group_score, dtype=torch.bool).scatter_(1, keep_groups, True)
        expert_mask = group_mask[:, :, None].expand_as(grouped).reshape(t, -1)
        index = biased.masked_fill(~expert_mask, float("-inf")).topk(self.top_k, dim=-1).indices
        weights = scores.gather(1, index)
        if self.top_k > 1:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return index, weights * self.routed_scaling_factor, logits


class LLaDA2MoeSparseMoeBlock(nn.Module):
    """Routed experts (through the seam) plus the always-on shared expert."""

    def __init__(self, config: LLaDA2MoeConfig):
        super().__init__()
        act = config.hidden_act
        self.experts = ExpertList(
            [
                SwiGLU(config.hidden_size, config.moe_intermediate_size, act)
                for _ in range(config.num_experts)
            ],
            ACT2FN[act],
        )
        self.gate = LLaDA2MoeGate(config)
        if config.num_shared_experts:
            self.shared_experts = SwiGLU(
                config.hidden_size, config.moe_intermediate_size * config.num_shared_experts, act
            )
        else:
            self.shared_experts = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        hidden = x.reshape(-1, shape[-1])
        index, weights, _ = self.gate(hidden)
        out = self.experts(hidden, index, weights).reshape(shape)
        if self.shared_experts is not None:
            out = out + self.shared_experts(x)
        return out


class LLaDA2MoeAttention(nn.Module):
    """Fused-QKV GQA attention with per-head q/k RMSNorm and partial RoPE."""

    def __init__(self, config: LLaDA2MoeConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.query_key_value = nn.Linear(
            config.hidden_size,
            (self.num_heads + 2 * self.num_kv_heads) * self.head_dim,
            bias=config.use_qkv_bias,
        )
        if config.use_qk_norm:
            self.query_layernorm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
            self.key_layernorm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.dense = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.use_bias)

    def forward(self, x, cos_sin, mask):
        b, n, _ = x.shape
        qkv = self.query_key_value(x).view(b, n, self.num_heads + 2 * self.num_kv_heads, self.head_dim)
        q, k, v = qkv.split([self.num_heads, self.num_kv_heads, self.num_kv_heads], dim=2)
        if self.config.use_qk_norm:
            q, k = self.query_layernorm(q), self.key_layernorm(k)
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
        return self.dense(out.transpose(1, 2).reshape(b, n, -1))


class LLaDA2MoeDecoderLayer(nn.Module):
    def __init__(self, config: LLaDA2MoeConfig, layer_idx: int):
        super().__init__()
        self.attention = LLaDA2MoeAttention(config)
        if config.num_experts and layer_idx >= config.first_k_dense_replace:
            self.mlp = LLaDA2MoeSparseMoeBlock(config)
        else:
            self.mlp = SwiGLU(config.hidden_size, config.intermediate_size, config.hidden_act)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, x, cos_sin, mask):
        x = x + self.attention(self.input_layernorm(x), cos_sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class LLaDA2MoePreTrainedModel(PreTrainedModel):
    config_class = LLaDA2MoeConfig
    base_model_prefix = "model"
    _no_split_modules = ["LLaDA2MoeDecoderLayer"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, LLaDA2MoeGate):
            from transformers import initialization as init

            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            init.zeros_(module.expert_bias)


class LLaDA2MoeModel(LLaDA2MoePreTrainedModel):
    def __init__(self, config: LLaDA2MoeConfig):
        super().__init__(config)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LLaDA2MoeDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.word_embeddings = value

    def forward(self, input_ids, attention_mask=None, position_ids=None) -> torch.Tensor:
        x = self.word_embeddings(input_ids)
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None].expand_as(
                input_ids
            )
        cos_sin = rope_cos_sin(
            position_ids,
            rotary_dim(self.config.head_dim, self.config.partial_rotary_factor),
            self.config.rope_theta,
            x.dtype,
        )
        mask = sdpa_mask(attention_mask, x.dtype)
        for layer in self.layers:
            x = layer(x, cos_sin, mask)
        return self.norm(x)


class LLaDA2MoeModelLM(LLaDA2MoePreTrainedModel):
    """LLaDA2 with its LM head: `model(input_ids, attention_mask=None).logits` [B, L, V] (float32)."""

    def __init__(self, config: LLaDA2MoeConfig):
        super().__init__(config)
        if config.norm_head:
            raise ValueError("norm_head=true LLaDA2 checkpoints are not supported (set in config.json)")
        self.model = LLaDA2MoeModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.word_embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(self, input_ids, attention_mask=None, position_ids=None,
                logits_to_keep: int | slice | torch.Tensor = 0, **kwargs) -> CausalLMOutput:
        """`logits_to_keep` as LLaDA-MoE's: the positions whose (float) logits are computed, all by default."""
        hidden = self.model(input_ids, attention_mask=attention_mask, position_ids=position_ids)
        return CausalLMOutput(logits=self.lm_head(hidden[:, kept_positions(logits_to_keep)]).float())


LLaDA2Config = LLaDA2MoeConfig
LLaDA2ModelLM = LLaDA2MoeModelLM


def _register() -> None:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if MODEL_TYPE not in CONFIG_MAPPING:
        AutoConfig.register(MODEL_TYPE, LLaDA2MoeConfig)
    for auto in (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM):
        try:
            auto.register(LLaDA2MoeConfig, LLaDA2MoeModelLM)
        except ValueError:
            pass


_register()
