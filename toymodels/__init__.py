"""Everything trainable: the toy model of superposition, the SAE family, training loops; and the small
models shipped trained (:func:`pretrained`).

``toymodels.pretrained`` is the function; the module of the same name is reached with
``from toymodels.pretrained import ...``."""

from toymodels.pretrained import pretrained, pretrained_card, pretrained_names

__all__ = ["pretrained", "pretrained_card", "pretrained_names"]
