#!/usr/bin/env bash
# End to end on a throw-away kind cluster: Istio + its Prometheus, Argo Workflows, ArgoCD, the demo
# app (canary v2 answers 5xx on purpose) and rollguard's PostSync hook. The script commits a 10 %
# canary to your GitOps repository, as CI would; ArgoCD syncs it, the hook analyses, and rollguard
# must push the rollback commit. It prints how long that took.
#
# NOT RUN where rollguard was written (no Docker, no network there): read it before you run it.
# Needs: docker, kind, kubectl, istioctl (1.22+), git, python3; network access; and
#   GITOPS_REPO   https URL of a repository you may push to (empty or throw-away; its k8s/ is replaced)
#   GITOPS_TOKEN  a token that may push there (becomes the Secret demo/rollguard-git)
# ArgoCD must be able to read GITOPS_REPO: make it public, or add it with `argocd repo add`.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${GITOPS_REPO:?set GITOPS_REPO to an https Git URL you can push to}"
: "${GITOPS_TOKEN:?set GITOPS_TOKEN to a token that may push to GITOPS_REPO}"
CLUSTER="${CLUSTER:-rollguard-e2e}"
ARGO_WORKFLOWS_VERSION="${ARGO_WORKFLOWS_VERSION:-v3.5.8}"   # any 3.5+ release
ISTIO_ADDONS="${ISTIO_ADDONS:-https://raw.githubusercontent.com/istio/istio/release-1.24/samples/addons}"
IMAGE=rollguard:e2e
say() { printf '\nkind-e2e: %s\n' "$*" >&2; }
for tool in docker kind kubectl istioctl git python3; do
  command -v "$tool" >/dev/null || { say "missing tool: $tool"; exit 2; }
done
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT

say "cluster $CLUSTER, Istio with Prometheus"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER"
istioctl install -y --set profile=minimal
kubectl apply -f "$ISTIO_ADDONS/prometheus.yaml"

say "Argo Workflows $ARGO_WORKFLOWS_VERSION and ArgoCD"
kubectl create namespace argo --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -n argo -f "https://github.com/argoproj/argo-workflows/releases/download/$ARGO_WORKFLOWS_VERSION/install.yaml"
kubectl create namespace argocd --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -n argocd --server-side -f https://raw.githubusercontent.com/argoproj/argo-cd/stable/manifests/install.yaml
kubectl -n argocd rollout status deploy/argocd-repo-server --timeout=300s

say "step image, WorkflowTemplates (no artifact repository here: without the verdict artifact), RBAC"
docker build -f images/Dockerfile -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"
python3 -m venv "$work/venv" && "$work/venv/bin/pip" install -q -e .
"$work/venv/bin/rollguard" render --out "$work/templates" --image "$IMAGE" --no-verdict-artifact
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace demo istio-injection=enabled --overwrite
kubectl apply -n demo -f "$work/templates/rollguard-steps.yaml" -f "$work/templates/canary-analysis.yaml" \
  -f "$work/templates/canary-release.yaml"
kubectl apply -f argocd/rbac.yaml
kubectl -n demo create secret generic rollguard-git --from-literal=token="$GITOPS_TOKEN" \
  --dry-run=client -o yaml | kubectl apply -f -

say "the app's manifests in $GITOPS_REPO (k8s/: podinfo, istio.yml at 100/0, the PostSync hook)"
askpass="$work/askpass"; printf '#!/bin/sh\necho "$GITOPS_TOKEN"\n' > "$askpass"; chmod 700 "$askpass"
export GIT_ASKPASS="$askpass" GIT_TERMINAL_PROMPT=0 GITOPS_TOKEN
git clone -q "$GITOPS_REPO" "$work/gitops"
mkdir -p "$work/gitops/k8s"
cp argocd/demo-app/podinfo.yaml argocd/demo-app/istio.yml "$work/gitops/k8s/"
sed "s#https://github.com/your-org/podinfo-gitops.git#$GITOPS_REPO#" \
  argocd/hook/canary-analysis-hook.yaml > "$work/gitops/k8s/rollguard-hook.yaml"
set_canary() {  # set_canary N: canary weight N (stable 100-N) in k8s/istio.yml, commit, push
  python3 - "$work/gitops/k8s/istio.yml" "$1" <<'PY'
import re, sys
path, canary = sys.argv[1], int(sys.argv[2])
text = open(path).read()
text = re.sub(r"weight: \d+ # stable", f"weight: {100 - canary} # stable", text)
text = re.sub(r"weight: \d+ # canary", f"weight: {canary} # canary", text)
open(path, "w").write(text)
PY
  git -C "$work/gitops" add -A
  git -C "$work/gitops" -c user.name=kind-e2e -c user.email=e2e@localhost commit -q -m "$2"
  git -C "$work/gitops" push -q origin HEAD:main
}
set_canary 0 "podinfo: stable only (kind-e2e set-up)"
sed "s#https://github.com/your-org/podinfo-gitops.git#$GITOPS_REPO#" argocd/application.yaml | kubectl apply -f -

say "waiting for the app, then load through the mesh"
for _ in $(seq 60); do kubectl -n demo get deploy podinfo-v2 >/dev/null 2>&1 && break; sleep 5; done
kubectl -n demo rollout status deploy/podinfo-v1 deploy/podinfo-v2 --timeout=300s
kubectl -n demo run loadgen --image=curlimages/curl --restart=Never --command -- \
  sh -c 'while true; do curl -s -o /dev/null http://podinfo.demo:9898/; sleep 0.05; done'

say "CI shifts 10 % to the faulty canary; the PostSync hook must roll it back"
set_canary 10 "podinfo: 10 % to v2 (kind-e2e)"
shifted_at=$(date +%s)
kubectl -n argocd patch application podinfo --type merge \
  -p '{"metadata":{"annotations":{"argocd.argoproj.io/refresh":"normal"}}}'
for _ in $(seq 120); do  # at most 10 minutes
  git -C "$work/gitops" pull -q --rebase origin main
  if grep -q "weight: 0 # canary" "$work/gitops/k8s/istio.yml"; then
    say "rolled back $(( $(date +%s) - shifted_at )) s after the 10 % push:"
    git -C "$work/gitops" log -1 --format='%h %s%n%n%b'
    kubectl -n demo get workflows
    exit 0
  fi
  sleep 5
done
say "no rollback commit within 10 minutes; look at: kubectl -n demo get workflows; kubectl -n argocd get app podinfo"
kubectl -n demo get workflows || true
exit 1
