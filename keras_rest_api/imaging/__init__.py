"""Images in, the model's pixels out: decoding to a model's contract under a memory budget (Pillow, no Keras)."""
from keras_rest_api.imaging.budget import DecodeBudget, set_malloc_policy
from keras_rest_api.imaging.decode import decode_image

__all__ = ["DecodeBudget", "decode_image", "set_malloc_policy"]
