"""Where the objects rollguard touches live in the Kubernetes API: one reference type, one constructor per kind.

Light to import (no Kubernetes client): the steps name their objects before the client has loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from rollguard.steps.traffic.istio_objects import ISTIO_GROUP

ARGOCD_GROUP = "argoproj.io"
# The networking.istio.io version the API is asked for (Istio serves v1alpha3, v1beta1 and, from 1.22, v1).
DEFAULT_ISTIO_API_VERSION = "v1beta1"


@dataclass(frozen=True)
class ObjectRef:
    """Where a namespaced custom object lives in the API."""

    group: str
    version: str
    plural: str
    namespace: str
    name: str

    def describe(self) -> str:
        """`virtualservices.networking.istio.io shop/reviews`, as kubectl would name it."""
        return f"{self.plural}.{self.group} {self.namespace}/{self.name}"


def virtual_service_ref(namespace: str, name: str, api_version: str = DEFAULT_ISTIO_API_VERSION) -> ObjectRef:
    """Where a VirtualService lives in the API, asked for in the networking.istio.io `api_version`."""
    return ObjectRef(ISTIO_GROUP, api_version, "virtualservices", namespace, name)


def application_ref(namespace: str, name: str) -> ObjectRef:
    """Where an ArgoCD Application lives in the API."""
    return ObjectRef(ARGOCD_GROUP, "v1alpha1", "applications", namespace, name)
