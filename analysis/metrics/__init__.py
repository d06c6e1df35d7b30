"""The scoring library: recovery metrics against known features (:mod:`.recovery`), SAE latents as
board-property classifiers (:mod:`.board`), linear regression onto exact beliefs (:mod:`.beliefs`), an SAE
spliced into the model it was trained on (:mod:`.splice`).
Every scorer takes plain tensors, so any method, not only our SAEs, can be scored."""
