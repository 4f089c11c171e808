"""Make an existing Lance dataset faster to train from, in place, as a new version.

- :mod:`~lancefeed.optimizer.run`: :func:`optimize`, the fragments on one machine or
  on Ray, the one commit;
- :mod:`~lancefeed.optimizer.fragments`: one fragment's column rewritten into a data
  file of its own, the other columns untouched;
- :mod:`~lancefeed.optimizer.report`: :class:`OptimizeSummary`, size and decode speed
  before and after.

Example:
    >>> import lancefeed
    >>> print(lancefeed.optimize("imagenet.lance"))  # doctest: +SKIP
"""

from lancefeed.optimizer.report import OptimizeSummary
from lancefeed.optimizer.run import optimize

__all__ = ["OptimizeSummary", "optimize"]
