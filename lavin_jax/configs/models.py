"""Model size tables: every architecture number of J-DiT and the ST-VAE lives here."""

import ml_collections

# name: (hidden_size, depth, num_heads, num_kv_heads, drop_path, sandwich_norm); paper
# Table 3 for 0.1b, 1b and 3.4b (the released model).
_JDIT = {
  "tiny": (96, 2, 4, 2, 0.0, True),
  "0.1b": (512, 12, 8, 8, 0.0, False),
  "1b": (1024, 28, 16, 16, 0.1, True),
  "3.4b": (2304, 22, 32, 8, 0.1, True),
}
JDIT_SIZES = tuple(_JDIT)

# Default remat policy (lavin_jax.models.jdit.REMAT_POLICIES) by activation memory at the
# paper's 10 examples per device (global batch 640 on 64 A100-80G) of 8 pairs: 4,608
# tokens at 256 px, 18,432 at 512 px, bfloat16 compute. Without remat a layer keeps about
# 40 D + 8 I bytes a token (I the SwiGLU width): 0.1b 31 KB -> 12 layers x 18,432 tokens
# x 10 = 69 GB at 512 px, which fits; 1b 62 KB -> 28 x 4,608 x 10 = 81 GB already at
# 256 px. 'save_attention' keeps the block input (float32, 4 D), the attention output
# (2 D) and its log-sum-exp (4 N) and recomputes projections and MLPs: 1b 6.2 KB -> 32 GB
# at 512 px; 3.4b 14 KB -> 22 x 18,432 x 10 = 57 GB, plus 8.5 GB of FSDP-sharded state.
_REMAT = {"tiny": "none", "0.1b": "none", "1b": "save_attention", "3.4b": "save_attention"}

# Default layer layout: scanned (one stacked 'blocks' tree, one compiled layer) or
# unrolled ('blocks_<i>'). Unrolled skips the scan's stacking of every layer's saved
# activations: the 0.1B train step runs 1.2x faster on CPU (bench/compare.py, 4 pairs at
# 256 px) for twice the compile time (14 s). From 1B up the compile time and program
# size grow with depth; tiny, the test model, keeps the large models' layout.
_SCAN = {"tiny": True, "0.1b": False, "1b": True, "3.4b": True}

# name: (block_out_channels, layers_per_block); `released` has 215.6M parameters.
_STVAE = {
  "released": ((128, 256, 256, 512), 3),
  "small": ((32, 64, 64, 64), 1),
  "tiny": ((32, 32, 32, 32), 1),
}
STVAE_SIZES = tuple(_STVAE)


def _check_size(kind: str, size: str, sizes) -> None:
  if size not in sizes:
    raise ValueError(f"Unknown {kind} size {size!r}; choose one of {', '.join(sizes)}.")


def jdit(size: str = "3.4b") -> ml_collections.ConfigDict:
  """J-DiT architecture of `size` (one of JDIT_SIZES)."""
  _check_size("J-DiT", size, JDIT_SIZES)
  hidden, depth, heads, kv_heads, drop_path, sandwich = _JDIT[size]
  c = ml_collections.ConfigDict()
  c.hidden_size = hidden
  c.depth = depth
  c.num_heads = heads
  c.num_kv_heads = kv_heads
  c.drop_path = drop_path
  c.sandwich_norm = sandwich
  c.in_channels = 16
  c.patch_size = 2
  c.mlp_ratio = 4.0  # SwiGLU inner = int(mlp_ratio * D * 2/3 / mlp_multiple_of) * multiple
  c.mlp_multiple_of = 64
  c.time_freq_dim = 256
  c.time_max_period = 10000.0
  c.rope_theta = 10000.0  # RoPE head_dim split rule: lavin_jax.models.layers.rope_split
  c.norm_eps = 1e-6
  c.embed_norm_eps = 1e-5
  c.dtype = "bfloat16"  # compute dtype
  c.param_dtype = "float32"
  c.scan_layers = _SCAN[size]
  c.remat_policy = _REMAT[size]  # see lavin_jax.models.jdit.REMAT_POLICIES
  c.attention_impl = "auto"  # auto | xla | cudnn | splash | chunked | blockwise (models.attention)
  c.attention_block_size = 512  # query/key block of the blockwise and splash paths
  c.attention_chunk_bytes = 8 * 2**20  # float32 logits per query chunk of the chunked path
  # True: the condition ignores the target and the time, so sampling computes its keys
  # and values once (models.jdit); False is the released model.
  c.independent_condition = False
  return c


def stvae(size: str = "released") -> ml_collections.ConfigDict:
  """ST-VAE architecture of `size` (one of STVAE_SIZES; small and tiny for tests)."""
  _check_size("ST-VAE", size, STVAE_SIZES)
  channels, layers = _STVAE[size]
  c = ml_collections.ConfigDict()
  c.block_out_channels = channels
  c.layers_per_block = layers
  c.latent_channels = 16
  c.in_channels = 3
  c.norm_num_groups = 32
  c.norm_eps = 1e-6
  c.temporal_compression = 4
  c.per_frame_norm = False  # True: GroupNorm per frame (strictly causal encoder)
  c.remat = False  # rematerialise each ResNet block
  c.logvar_min = -30.0
  c.logvar_max = 20.0
  c.latent_shift = 0.032470703125
  c.latent_scale = 1.08936170213
  c.tile_sample_size = 512  # pixels
  c.tile_overlap = 0.25
  c.tile_frames = 129
  c.dtype = "float32"
  c.param_dtype = "float32"
  return c


def spatial_factor(config: ml_collections.ConfigDict) -> int:
  """Pixels per ST-VAE latent cell along a side: each stage but the last halves H and W."""
  return 2 ** (len(config.block_out_channels) - 1)


def pixel_multiple(vae: ml_collections.ConfigDict, dit: ml_collections.ConfigDict) -> int:
  """Image sides must be multiples of this: the ST-VAE factor times J-DiT's patch size."""
  return spatial_factor(vae) * dit.patch_size
