"""Every split of a permutation table: :class:`Permutations`."""

from __future__ import annotations

from typing import Dict, List, Optional, Union

from lancefeed.permutation.interop import PermutationTableLike, load_table, metadata, num_splits, split_names
from lancefeed.permutation.view import Permutation
from lancefeed.source import SourceLike, VersionLike


class Permutations:
    """Every split of a permutation table, by name or index.

    Example:
        >>> perms = Permutations("cifar.lance", table)  # doctest: +SKIP
        >>> perms.split_names, len(perms["train"])  # doctest: +SKIP
        (['train', 'val'], 45000)
    """

    def __init__(
        self,
        source: Optional[SourceLike],
        permutation_table: PermutationTableLike,
        *,
        version: Optional[VersionLike] = None,
        storage_options: Optional[Dict[str, str]] = None,
    ) -> None:
        self.source = source
        self.permutation_table = load_table(permutation_table, storage_options)
        meta = metadata(self.permutation_table)
        self.split_names: List[str] = split_names(meta)
        self.split_dict: Dict[str, int] = {n: i for i, n in enumerate(self.split_names)}
        self._num_splits = num_splits(self.permutation_table, meta)
        self._version = version
        self._storage_options = storage_options

    def __len__(self) -> int:
        return self._num_splits

    def __getitem__(self, split: Union[str, int]) -> Permutation:
        return Permutation.from_tables(
            self.source,
            self.permutation_table,
            split,
            version=self._version,
            storage_options=self._storage_options,
        )

    def get_by_name(self, name: str) -> Permutation:
        """The split called ``name``."""
        if not isinstance(name, str):
            raise TypeError(f"split name must be a string, got {type(name).__name__}")
        return self[name]

    def get_by_index(self, index: int) -> Permutation:
        """The split with index ``index``."""
        return self[int(index)]
