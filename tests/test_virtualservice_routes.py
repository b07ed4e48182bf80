"""Which routes are the split: the default route when it holds both subsets, else the routes holding both when
they agree, else --route NAME; matched routes outside the split (testers, session affinity) are never touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from rollguard.steps.traffic.live_routes import apply_split_to_routes
from rollguard.steps.traffic.manifest_errors import InvalidWeights, SplitRouteUnclear, WeightedRouteNotFound
from rollguard.steps.traffic.manifest_yaml import load_documents, plain
from rollguard.steps.traffic.virtualservice import find_split, read_split
from rollguard.steps.traffic.weight_edit import set_split

FIXTURE = (Path(__file__).parent / "fixtures" / "istio.yml").read_text(encoding="utf-8")
# The testers' header route holds both subsets, pinned to the canary (as Flagger's session-affinity route does).
PINNED = FIXTURE.replace(
    "    route:\n    - destination:\n        host: reviews\n        subset: v2\n  # The weighted split",
    "    route:\n    - destination:\n        host: reviews\n        subset: v1\n      weight: 0\n"
    "    - destination:\n        host: reviews\n        subset: v2\n      weight: 100\n  # The weighted split",
)
URI_ROUTES = """\
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - name: api
    match: [{uri: {prefix: /api}}]
    route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
  - name: web
    match: [{uri: {prefix: /web}}]
    route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
  - name: rest
    route:
    - {destination: {host: reviews, subset: v1}}
"""


def changed_lines(old: str, new: str) -> list[tuple[str, str]]:
    return [(a, b) for a, b in zip(old.splitlines(), new.splitlines(), strict=True) if a != b]


def test_the_pinned_header_route_is_not_part_of_the_split() -> None:
    assert "weight: 100" in PINNED
    assert read_split(PINNED, "reviews", "v1", "v2") == (90, 10)
    edit = set_split(PINNED, "reviews", "v1", "v2", 0)
    assert (edit.before_stable_weight, edit.before_canary_weight, edit.routes_changed) == (90, 10, 1)
    assert changed_lines(PINNED, edit.text) == [
        ("      weight: 90     # stable", "      weight: 100     # stable"),
        ("      weight: 10     # canary", "      weight: 0     # canary"),
    ]


def test_the_live_patch_follows_the_same_rule() -> None:
    live = plain(load_documents(PINNED)[1])["spec"]["http"]
    new_routes, changed = apply_split_to_routes(live, "v1", "v2", 0)
    assert changed == 1 and new_routes[0] is live[0]
    assert [entry["weight"] for entry in new_routes[1]["route"]] == [100, 0]


def test_routes_that_split_alike_are_the_split_when_no_default_route_holds_both() -> None:
    assert read_split(URI_ROUTES, "reviews", "v1", "v2") == (90, 10)
    edit = set_split(URI_ROUTES, "reviews", "v1", "v2", 30)
    assert edit.routes_changed == 2 and len(changed_lines(URI_ROUTES, edit.text)) == 4
    assert "- {destination: {host: reviews, subset: v1}}\n" in edit.text  # the default route, untouched


def test_routes_that_disagree_are_refused_with_the_fix() -> None:
    text = URI_ROUTES.replace("subset: v1}, weight: 90}", "subset: v1}, weight: 50}", 1).replace(
        "subset: v2}, weight: 10}", "subset: v2}, weight: 50}", 1
    )
    for attempt in (lambda: read_split(text, "reviews", "v1", "v2"), lambda: set_split(text, "reviews", "v1", "v2", 0)):
        with pytest.raises(SplitRouteUnclear, match=r"'api' at line 7: 50/50, #2 'web' at line 12: 90/10\); pass "
                           r"--route NAME"):
            attempt()
    live = plain(load_documents(text)[0])["spec"]["http"]
    with pytest.raises(SplitRouteUnclear, match="pass --route NAME"):
        apply_split_to_routes(live, "v1", "v2", 0)


def test_route_names_decide() -> None:
    edit = set_split(URI_ROUTES, "reviews", "v1", "v2", 0, routes=("web",))
    assert edit.routes_changed == 1
    assert find_split(edit.text, "reviews", "v1", "v2", ("web",)).canary_weight == 0
    assert find_split(edit.text, "reviews", "v1", "v2", ("api",)).canary_weight == 10
    # Even over a default route that holds both: here the testers' route is moved, the default one is not.
    assert read_split(PINNED, "reviews", "v1", "v2", ("testers",)) == (0, 100)
    with pytest.raises(InvalidWeights, match="disagree"):  # named routes are the split, and status needs one split
        read_split(PINNED, "reviews", "v1", "v2", ("testers", "primary"))
    assert set_split(PINNED, "reviews", "v1", "v2", 0, routes=("testers", "primary")).routes_changed == 2


@pytest.mark.parametrize(
    ("routes", "words"),
    [
        (("nope",), "--route nope: no HTTP route is named 'nope'; named routes: 'api', 'web', 'rest'"),
        (("rest",), "--route rest: the route does not hold both subset 'v1' and 'v2'"),
    ],
)
def test_a_route_name_that_is_not_a_split_is_refused(routes: tuple[str, ...], words: str) -> None:
    with pytest.raises(SplitRouteUnclear, match=words):
        set_split(URI_ROUTES, "reviews", "v1", "v2", 0, routes=routes)


def test_a_split_between_hosts_is_named_as_such() -> None:
    text = URI_ROUTES.split("  http:\n")[0] + (
        "  http:\n  - route:\n    - {destination: {host: reviews-v1}, weight: 90}\n"
        "    - {destination: {host: reviews-v2}, weight: 10}\n"
    )
    with pytest.raises(WeightedRouteNotFound) as refused:
        read_split(text, "reviews", "v1", "v2")
    assert str(refused.value).endswith(
        "its routes: #1 at line 7 -> hosts reviews-v1, reviews-v2, no subset (a split between hosts, which rollguard "
        "does not move)"
    )
    mixed = text.replace("{host: reviews-v2}", "{host: reviews, subset: v2}")
    with pytest.raises(WeightedRouteNotFound, match=r"-> host reviews-v1 \(no subset\) 90, v2 10$"):
        read_split(mixed, "reviews", "v1", "v2")


def test_a_split_in_a_tcp_route_is_the_split() -> None:
    """A TCP route is split by the same rule (more in test_virtualservice_tcp.py)."""
    text = URI_ROUTES.split("  http:\n")[0] + (
        "  tcp:\n  - match: [{port: 27017}]\n    route:\n"
        "    - {destination: {host: mongo, subset: v1}, weight: 90}\n"
        "    - {destination: {host: mongo, subset: v2}, weight: 10}\n"
    )
    assert read_split(text, "reviews", "v1", "v2") == (90, 10)
    assert [(route.kind, route.index) for route in find_split(text, "reviews", "v1", "v2").routes] == [("tcp", 0)]
