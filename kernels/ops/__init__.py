"""One folder per op: ``unified_attention/`` (the fused attention of SUAN / LightSUAN) and
``target_attention/`` (candidates against a cached history). The functions are exported by
``suan_kernels`` itself; this package re-exports nothing, so ``suan_kernels.ops.<op>`` always
names the op's folder."""
