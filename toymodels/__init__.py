"""Everything trainable: the toy model of superposition, the SAE family, training loops."""
