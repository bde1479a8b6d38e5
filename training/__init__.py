"""The distillation library (Sanh et al. 2019): student initialisation, the triple loss,
task distillation, and a trainer (AMP, accumulation, torchrun DDP, resumable checkpoints).
Depends on ``model`` only."""
