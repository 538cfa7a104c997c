"""Attention kernels behind the seam (models/attention_impl.py) and the lazy mask they read.

  segment_mask.py  SegmentMask / Window: a mask as segment ids + positions + kind (static)
  splash.py        TPU: Pallas splash attention (segment ids, causal / local window, soft-cap)
  cudnn.py         GPU: cuDNN flash attention through jax.nn.dot_product_attention
"""
