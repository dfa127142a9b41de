"""Formal-language benchmark of sequence models (Bhattamishra et al. 2020; Irie et al. 2023).

- ``languages``: parity, (aa)*, (abab)*, counter-2/3, shuffle-2, dyck-1, reset-dyck, with the
  per-position "valid next characters" targets and length-uniform samplers.
- ``data``: length bins, fixed seeded test sets, padded batches.
- ``model``: embedding → ``fwp.layers.LayerStack`` of any registered layer → multi-label head.
- ``train``: training, evaluation, resumable run folders.
- ``sweep`` / ``report``: models × languages grids, markdown table and heat map.
- ``cli``: ``fwp formal {languages,train,eval,sweep,report}``.
"""

from fwp.formal.languages import END, LANGUAGES, Language, get_language

__all__ = ["END", "LANGUAGES", "Language", "get_language"]
