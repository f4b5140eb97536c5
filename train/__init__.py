"""Training side of sfrs-edge (needs torch): backbones, NetVLAD, PCA whitening, checkpoints,
off-the-shelf initialisation, importers, and SFRS generational training."""
