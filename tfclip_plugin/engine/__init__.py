"""The two-phase TF-CLIP engine on torchreid's Engine."""
