"""The local sandbox: real processes on loopback standing in for Istio, ArgoCD and the cluster."""
