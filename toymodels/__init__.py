"""Everything trainable: the toy model of superposition, the SAE family, training loops; and the small
models shipped trained (:func:`pretrained`, from :mod:`toymodels.shipped`)."""

from toymodels.shipped import pretrained, pretrained_card, pretrained_names

__all__ = ["pretrained", "pretrained_card", "pretrained_names"]
