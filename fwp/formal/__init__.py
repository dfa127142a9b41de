"""Formal-language benchmark of sequence models (Bhattamishra et al. 2020; Irie et al. 2023).

- ``languages``: parity, (aa)*, (abab)*, counter-2/3, shuffle-2, dyck-1, reset-dyck, with the
  per-position "valid next characters" targets and length-uniform samplers.
- ``tasks``: code execution, sequential ListOps, associative recall (one answer class per
  scored position), in the same registry (``SEQUENCE_TASKS``) and commands.
- ``data``: length bins, fixed seeded test sets, padded batches.
- ``model``: embedding → ``fwp.layers.LayerStack`` of any registered layer → multi-label head.
- ``train``: training, evaluation, resumable run folders.
- ``sweep`` / ``report``: models × languages grids, markdown table and heat map.
- ``cli``: ``fwp formal {languages,train,eval,sweep,report}``.
"""

from fwp.formal.languages import END, LANGUAGES, SEQUENCE_TASKS, Language, get_language

__all__ = ["END", "LANGUAGES", "SEQUENCE_TASKS", "Language", "get_language"]
