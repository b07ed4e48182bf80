"""`--target cluster`: timestamps from a live VirtualService (fake Kubernetes API over HTTP) and a real Prometheus."""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import pytest
from fake_kube_api import FakeKubeApi, virtual_service_object
from rich.console import Console
from support_prometheus import istio_environment, wait_for_result

from rollguard.experiment import command
from rollguard.experiment.cluster import ClusterWatcher, canary_weight
from rollguard.experiment.records import RunRecord
from rollguard.sandbox.synthetic_traffic import TrafficProfile
from rollguard.steps.gitops.object_refs import virtual_service_ref
from rollguard.steps.metrics.istio_queries import error_rate_query


def test_canary_weight_reads_the_weighted_route_only() -> None:
    live = virtual_service_object(stable=70, canary=30)
    assert canary_weight(live, "v1", "v2") == 30  # the header route to v2 alone is not the split
    assert canary_weight(live, "v1", "v3") is None


def test_watcher_records_fault_breach_and_cut_from_the_cluster(tmp_path: Path) -> None:
    with FakeKubeApi() as api, istio_environment(seed=11) as env:
        api.put(virtual_service_object(name="reviews", namespace="demo", stable=100, canary=0))
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        env.traffic.set("reviews", "v1", TrafficProfile(requests_per_s=40))
        env.traffic.set("reviews", "v2", TrafficProfile(requests_per_s=20, error_rate=0.0))
        env.wait_for_requests("reviews", "v2")

        parser = argparse.ArgumentParser()
        command.add_arguments(parser)
        args = parser.parse_args([
            "--target", "cluster", "--report-dir", str(tmp_path / "report"), "--kubeconfig", str(kubeconfig),
            "--namespace", "demo", "--service", "reviews", "--prometheus-url", env.url, "--window", "5s",
            "--wait-timeout", "60s",
        ])
        watcher = ClusterWatcher.from_args(args)
        records: list[RunRecord] = []
        worker = threading.Thread(target=lambda: records.append(watcher.run(1, "faulty", "automated",
                                                                            Console(quiet=True))))
        worker.start()

        before_release = time.time()
        api.put(virtual_service_object(name="reviews", namespace="demo", stable=90, canary=10))  # release
        env.traffic.set("reviews", "v2", TrafficProfile(requests_per_s=20, error_rate=1.0))  # the canary fails
        wait_for_result(env.url, error_rate_query("demo", "reviews", "v2", "5s"), deadline_s=30, minimum=0.5)
        before_cut = time.time()
        api.put(virtual_service_object(name="reviews", namespace="demo", stable=100, canary=0))  # rollback
        worker.join(60)
        assert not worker.is_alive(), "the watcher did not see the cut"

    record = records[0]
    assert record.outcome == "rolled_back"
    assert record.fault_start is not None and before_release <= record.fault_start <= before_cut
    assert record.traffic_cut is not None and record.traffic_cut >= before_cut
    assert record.first_breach is not None and record.fault_start <= record.first_breach <= record.traffic_cut + 1
    assert record.failed_requests > 10
    assert record.extra["series"], "no error-rate series for the plot"


@pytest.mark.parametrize("flag", ["--istio-api-version", "--virtual-service-api-version"])
def test_istio_api_version_has_the_steps_flag_name_and_keeps_the_old_one(flag: str, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert "--virtual-service-api-version" not in parser.format_help()  # the old name still works, unadvertised
    with FakeKubeApi() as api:
        args = parser.parse_args([
            "--target", "cluster", "--report-dir", str(tmp_path / "report"),
            "--kubeconfig", str(api.write_kubeconfig(tmp_path / "kubeconfig")),
            "--namespace", "demo", "--service", "reviews", flag, "v1",
        ])  # fmt: skip
        assert ClusterWatcher.from_args(args).ref == virtual_service_ref("demo", "reviews", "v1")
        defaults = parser.parse_args(["--target", "cluster", "--report-dir", str(tmp_path / "report")])
        assert defaults.istio_api_version == "v1beta1"
