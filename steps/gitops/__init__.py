"""GitOps: clone/commit/push the manifest repo, credentials, ArgoCD sync and the live VirtualService patch."""
