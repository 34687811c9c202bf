from .pphgnet import (CONFIGS, MIN_INPUT_SIZE, PPHGNet, PPHGNetConfig, StageConfig, pphgnet_base,
                      pphgnet_small, pphgnet_tiny, randomize_statistics)

__all__ = ["CONFIGS", "MIN_INPUT_SIZE", "PPHGNet", "PPHGNetConfig", "StageConfig", "pphgnet_tiny",
           "pphgnet_small", "pphgnet_base", "randomize_statistics"]
