"""Flax Linen modules: pure functions of (params, batch) -> arrays.

  blocks/            shared transformer parts (attention, masks, norms, MLPs, positions, layers)
  attention_impl.py  name -> attention kernel, chosen per backend
  dense.py           the matmul seam (dot_general policy)
  families/<name>/   each family's config and modules, composed of blocks
  encoder.py         BareEncoder / SequenceClassifier wrappers; heads.py, pooling.py

Nothing is re-exported here: import from the module that holds a name (a family's config and
modules from families/<name>/, the wrappers from encoder.py), so each name has one home.
"""
