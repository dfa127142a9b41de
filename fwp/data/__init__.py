"""Few-shot data: data sets read from the files users have, a built-in glyph set, seeded episodes.

``load_dataset(name, root, split, **options)`` gives a :class:`FewShotDataset` (the classes of one
split over a compact uint8 image cache); :class:`EpisodeSampler` draws N-way K-shot
:class:`Episode` batches from it, episode ``i`` a pure function of (seed, i).
"""

from fwp.data.cache import cache_dir
from fwp.data.dataset import FewShotDataset
from fwp.data.episodes import Episode, EpisodeSampler, EpisodeStream, Prefetcher
from fwp.data.loading import BUILT_IN, DATASETS, SPLITS, check_options, load_dataset

__all__ = [
    "BUILT_IN",
    "DATASETS",
    "SPLITS",
    "Episode",
    "EpisodeSampler",
    "EpisodeStream",
    "FewShotDataset",
    "Prefetcher",
    "cache_dir",
    "check_options",
    "load_dataset",
]
