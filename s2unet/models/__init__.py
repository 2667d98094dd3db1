"""Models: ``create_model(cfg)`` builds the encoder + adapters + decoder a config describes."""
from .encoders import create_encoder, encoder_names
from .s2unet import S2UNet, create_model

__all__ = ["S2UNet", "create_encoder", "create_model", "encoder_names"]
