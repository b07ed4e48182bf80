"""TCP and TLS routes are split like HTTP routes: the same selection rule, weight-only edits, and every command
and the live patch, starting from Istio's own TCP traffic-shifting sample (samples/tcp-echo, 80/20)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_kube_api import FakeKubeApi
from git_remote import MANIFEST_PATH, make_remote, remote_file

from rollguard.steps import cli
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.traffic.live_routes import apply_split_to_spec
from rollguard.steps.traffic.manifest_errors import SplitRouteUnclear, WeightedRouteNotFound
from rollguard.steps.traffic.manifest_yaml import load_documents, plain
from rollguard.steps.traffic.virtualservice import find_split, read_split
from rollguard.steps.traffic.weight_edit import set_split

# istio/istio samples/tcp-echo/tcp-echo-20-v2.yaml (commit 86057475), verbatim: a `tcp:` route matching
# port 31400, 80 % to subset v1 and 20 % to v2, on the gateway.
TCP_ECHO = (Path(__file__).parent / "fixtures" / "tcp-echo-20-v2.yaml").read_text(encoding="utf-8")

TLS_AND_HTTP = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: shop}
spec:
  hosts: [shop.example.com]
  http:
  - name: web
    route:
    - {destination: {host: shop, subset: v1}, weight: 90}  # stable
    - {destination: {host: shop, subset: v2}, weight: 10}  # canary
  tls:
  - match: [{port: 443, sniHosts: [shop.example.com]}]
    route:
    - destination: {host: shop, subset: v1}
      weight: 90
    - destination: {host: shop, subset: v2}
      weight: 10
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: shop, namespace: shop}
spec:
  host: shop
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


def changed_lines(old: str, new: str) -> list[tuple[str, str]]:
    return [(a, b) for a, b in zip(old.splitlines(), new.splitlines(), strict=True) if a != b]


def test_istios_tcp_sample_is_read_and_edited_weight_only() -> None:
    split = find_split(TCP_ECHO, "tcp-echo", "v1", "v2")
    assert [(route.kind, route.index) for route in split.routes] == [("tcp", 0)]
    assert read_split(TCP_ECHO, "tcp-echo", "v1", "v2") == (80, 20)
    assert "no DestinationRule in this file" in split.warnings[0]
    rolled_back = set_split(TCP_ECHO, "tcp-echo", "v1", "v2", 0)
    assert changed_lines(TCP_ECHO, rolled_back.text) == [("      weight: 80", "      weight: 100"),
                                                         ("      weight: 20", "      weight: 0")]
    assert rolled_back.text.startswith(TCP_ECHO.split("apiVersion")[0])  # the license header and layout kept
    promoted = set_split(rolled_back.text, "tcp-echo", "v1", "v2", 50)
    assert read_split(promoted.text, "tcp-echo", "v1", "v2") == (50, 50)


def test_a_service_with_http_and_tls_routes_moves_both() -> None:
    assert read_split(TLS_AND_HTTP, "shop", "v1", "v2") == (90, 10)
    edit = set_split(TLS_AND_HTTP, "shop", "v1", "v2", 0)
    assert edit.routes_changed == 2
    assert changed_lines(TLS_AND_HTTP, edit.text) == [
        ("    - {destination: {host: shop, subset: v1}, weight: 90}  # stable",
         "    - {destination: {host: shop, subset: v1}, weight: 100}  # stable"),
        ("    - {destination: {host: shop, subset: v2}, weight: 10}  # canary",
         "    - {destination: {host: shop, subset: v2}, weight: 0}  # canary"),
        ("      weight: 90", "      weight: 100"),
        ("      weight: 10", "      weight: 0"),
    ]
    # --route names HTTP routes (TCP and TLS routes have no name in Istio's API): then only those move.
    named = set_split(TLS_AND_HTTP, "shop", "v1", "v2", 0, routes=("web",))
    assert named.routes_changed == 1 and "      weight: 90\n" in named.text


def test_disagreeing_tcp_routes_are_refused_naming_them() -> None:
    text = TCP_ECHO + (
        "  - match:\n    - port: 31401\n    route:\n"
        "    - destination: {host: tcp-echo, subset: v1}\n      weight: 50\n"
        "    - destination: {host: tcp-echo, subset: v2}\n      weight: 50\n"
    )
    with pytest.raises(SplitRouteUnclear, match=r"the TCP routes that do disagree on the split \(TCP #1 at line 25: "
                                                 r"80/20, TCP #2 at line 40: 50/50\); TCP routes have no name"):
        read_split(text, "tcp-echo", "v1", "v2")


def test_http_and_tcp_splits_that_disagree_are_refused_by_status() -> None:
    text = TLS_AND_HTTP.replace("weight: 90\n", "weight: 80\n").replace("weight: 10\n", "weight: 20\n")
    with pytest.raises(ValueError, match=r"disagree on the split \(HTTP route at line 7: 90/10, TLS route at line 12: "
                                         r"80/20\)"):
        read_split(text, "shop", "v1", "v2")


def test_no_route_of_any_kind_holding_both_subsets_lists_them_all() -> None:
    text = TCP_ECHO.replace("subset: v2", "subset: v3")
    with pytest.raises(WeightedRouteNotFound, match=r"no route \(HTTP, TCP or TLS\) whose destinations include both "
                                                    r"subset 'v1' and 'v2'; its routes: TCP #1 at line 25 -> v1 80, "
                                                    r"v3 20"):
        read_split(text, "tcp-echo", "v1", "v2")


def test_the_live_patch_sets_the_same_tcp_weights() -> None:
    live = plain(load_documents(TLS_AND_HTTP)[0])["spec"]
    changed_kinds, changed = apply_split_to_spec(live, "v1", "v2", 0)
    assert changed == 2 and set(changed_kinds) == {"http", "tls"}
    assert [entry["weight"] for entry in changed_kinds["tls"][0]["route"]] == [100, 0]
    assert changed_kinds["tls"][0]["match"] == live["tls"][0]["match"]
    again, changed_again = apply_split_to_spec({**live, **changed_kinds}, "v1", "v2", 0)
    assert (again, changed_again) == ({}, 0)


# -- the commands, on the sample in a real bare repository ----------------------------------------------------
def run(remote: Path, command: str, *extra: str) -> int:
    return cli.main([command, "--repo", str(remote), "--path", MANIFEST_PATH, "--virtual-service", "tcp-echo",
                     *extra])


def test_status_deploy_promote_rollback_on_the_tcp_sample(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    remote = make_remote(tmp_path, {MANIFEST_PATH: TCP_ECHO})
    assert run(remote, "status") == ExitCode.OK
    assert "tcp-echo: stable v1 80 %, canary v2 20 %" in capfd.readouterr().out
    assert run(remote, "promote", "--weight", "50") == ExitCode.OK
    assert read_split(remote_file(remote), "tcp-echo", "v1", "v2") == (50, 50)
    assert run(remote, "rollback") == ExitCode.OK
    assert run(remote, "rollback") == ExitCode.OK  # idempotent
    assert run(remote, "deploy", "--weight", "10") == ExitCode.OK
    final = remote_file(remote)
    assert changed_lines(TCP_ECHO, final) == [("      weight: 80", "      weight: 90"),
                                              ("      weight: 20", "      weight: 10")]


@pytest.fixture
def tcp_api() -> Iterator[FakeKubeApi]:
    with FakeKubeApi() as api:
        live = plain(load_documents(TCP_ECHO)[0])
        live["metadata"]["namespace"] = "default"
        api.put(live)
        yield api


def test_rollback_live_patches_the_tcp_route(tcp_api: FakeKubeApi, tmp_path: Path) -> None:
    remote = make_remote(tmp_path, {MANIFEST_PATH: TCP_ECHO})
    result_file = tmp_path / "result.json"
    code = run(remote, "rollback", "--live-patch", "--namespace", "default",
               "--kubeconfig", str(tcp_api.write_kubeconfig(tmp_path / "kubeconfig")), "--result-file",
               str(result_file))
    assert code == ExitCode.OK
    assert json.loads(result_file.read_text())["live_patch"]["outcome"] == "patched"
    (patch,) = tcp_api.patches("virtualservices")
    assert set(patch.body["spec"]) == {"tcp"}
    live = tcp_api.get("networking.istio.io", "default", "virtualservices", "tcp-echo")
    assert [entry["weight"] for entry in live["spec"]["tcp"][0]["route"]] == [100, 0]
    assert live["spec"]["tcp"][0]["match"] == [{"port": 31400}]
