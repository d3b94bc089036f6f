"""Anchored reinforcement training: distillation warm start (SFT) + GRPO in the simulator."""
