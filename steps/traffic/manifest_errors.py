"""Why a manifest cannot be read or edited as asked: one ManifestError kind per problem, each naming the fix."""

from __future__ import annotations


class ManifestError(ValueError):
    """The manifest cannot be read or edited as asked; the message names the problem and the fix."""


class ManifestSyntaxError(ManifestError):
    """The file is not valid YAML."""


class ManifestTooLarge(ManifestError):
    """The file is too large, or expands through YAML aliases into too much data, to be edited safely."""


class VirtualServiceNotFound(ManifestError):
    """No VirtualService with the given metadata.name is in the file."""


class WeightedRouteNotFound(ManifestError):
    """The VirtualService has no HTTP route whose destinations include both subsets."""


class UndeclaredSubset(ManifestError):
    """A subset is not declared by a DestinationRule in the same file."""


class InvalidWeights(ManifestError):
    """Weights are missing, not whole numbers, outside 0..100, or would not add up to 100."""


class SplitRouteUnclear(ManifestError):
    """Which routes are the split is unclear (the routes holding both subsets disagree), or --route names a
    route that is missing or does not hold both subsets."""
