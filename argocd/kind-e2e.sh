#!/usr/bin/env bash
# End to end on a throw-away kind cluster: Istio + its Prometheus, Argo Workflows, ArgoCD, the demo
# app (canary v2 answers 5xx on purpose) and rollguard's PostSync hook. The script commits a 10 %
# canary to your GitOps repository, as CI would; ArgoCD syncs it, the hook analyses, and rollguard
# must push a rollback commit whose verdict is `fail`. It prints how long that took.
#
# NOT RUN where rollguard was written (no Docker, no network there): read it before you run it.
# Needs: docker, kind, kubectl, istioctl (1.22+), git, python3; network access; and
#   GITOPS_REPO   https URL of a repository you may push to (empty or throw-away; its k8s/ is replaced)
#   GITOPS_TOKEN  a token that may push there (becomes the Secret demo/rollguard-git)
# ArgoCD must be able to read GITOPS_REPO: make it public, or add it with `argocd repo add`.
# Versions: ARGO_WORKFLOWS_VERSION must be 3.6 or later (argocd/README.md, "Supported versions":
# the templates use `synchronization.mutexes`, which Argo Workflows has from 3.6 on); ARGOCD_VERSION
# any ArgoCD 2.13 or later.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${GITOPS_REPO:?set GITOPS_REPO to an https Git URL you can push to}"
: "${GITOPS_TOKEN:?set GITOPS_TOKEN to a token that may push to GITOPS_REPO}"
CLUSTER="${CLUSTER:-rollguard-e2e}"
ARGO_WORKFLOWS_VERSION="${ARGO_WORKFLOWS_VERSION:-v4.1.2}"
ARGOCD_VERSION="${ARGOCD_VERSION:-v3.5.1}"
ISTIO_ADDONS="${ISTIO_ADDONS:-https://raw.githubusercontent.com/istio/istio/release-1.24/samples/addons}"
IMAGE=rollguard:e2e
# A rollback commit counts only when it quotes a `fail` verdict (steps/rollback.py writes the line
# "Verdict: fail: <reason>"): an unreachable Prometheus (inconclusive), a crash (error) or the exit
# handler also roll back, and none of them is what this test is about.
ROLLBACK_SUBJECT='^rollguard: roll back '
FAIL_VERDICT_LINE='^Verdict: fail: '
say() { printf '\nkind-e2e: %s\n' "$*" >&2; }
for tool in docker kind kubectl istioctl git python3; do
  command -v "$tool" >/dev/null || { say "missing tool: $tool"; exit 2; }
done

# supported_argo_version vX.Y.Z: 0 when Argo Workflows X.Y is 3.6 or later.
supported_argo_version() {
  local major minor
  [[ "$1" =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+ ]] || return 1
  major="${BASH_REMATCH[1]}"; minor="${BASH_REMATCH[2]}"
  (( major > 3 || (major == 3 && minor >= 6) ))
}
if ! supported_argo_version "$ARGO_WORKFLOWS_VERSION"; then
  say "ARGO_WORKFLOWS_VERSION=$ARGO_WORKFLOWS_VERSION is not supported: give a release vX.Y.Z of 3.6 or later"
  say "(rollguard's templates lock the VirtualService with synchronization.mutexes, new in 3.6; see argocd/README.md)"
  exit 2
fi
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT

say "cluster $CLUSTER, Istio with Prometheus"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER"
istioctl install -y --set profile=minimal
kubectl apply -f "$ISTIO_ADDONS/prometheus.yaml"

say "Argo Workflows $ARGO_WORKFLOWS_VERSION and ArgoCD $ARGOCD_VERSION"
# --server-side: Argo Workflows 4.x ships full CRDs, too large for a client-side apply (its
# docs/installation.md, "Full CRDs"); ArgoCD's own CRDs need it too. It does no harm on 3.6/3.7.
kubectl create namespace argo --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -n argo --server-side --force-conflicts \
  -f "https://github.com/argoproj/argo-workflows/releases/download/$ARGO_WORKFLOWS_VERSION/install.yaml"
kubectl create namespace argocd --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -n argocd --server-side --force-conflicts \
  -f "https://raw.githubusercontent.com/argoproj/argo-cd/$ARGOCD_VERSION/manifests/install.yaml"
kubectl -n argo rollout status deploy/workflow-controller --timeout=300s
kubectl -n argocd rollout status deploy/argocd-repo-server --timeout=300s

say "step image, namespace, WorkflowTemplates (as committed: no artifact repository needed), RBAC"
docker build -f images/Dockerfile -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"
python3 -m venv "$work/venv" && "$work/venv/bin/pip" install -q -e '.[render]'
"$work/venv/bin/rollguard" render --out "$work/templates" --image "$IMAGE"
kubectl apply -f argocd/namespace.yaml
kubectl apply -n demo -f "$work/templates/canary-analysis.yaml" -f "$work/templates/canary-release.yaml" \
  -f "$work/templates/rollguard-steps.yaml"
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
set_canary() {  # set_canary N MESSAGE: canary weight N (stable 100-N) in k8s/istio.yml, commit, push
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

say "CI shifts 10 % to the faulty canary; the PostSync hook must roll it back on a fail verdict"
set_canary 10 "podinfo: 10 % to v2 (kind-e2e)"
shifted="$(git -C "$work/gitops" rev-parse HEAD)"
shifted_at=$(date +%s)
kubectl -n argocd patch application podinfo --type merge \
  -p '{"metadata":{"annotations":{"argocd.argoproj.io/refresh":"normal"}}}'
for _ in $(seq 120); do  # at most 10 minutes
  git -C "$work/gitops" fetch -q origin main
  for commit in $(git -C "$work/gitops" rev-list --reverse "$shifted..FETCH_HEAD"); do
    message="$(git -C "$work/gitops" log -1 --format=%B "$commit")"
    grep -q "$ROLLBACK_SUBJECT" <<<"$message" || continue
    if grep -q "$FAIL_VERDICT_LINE" <<<"$message"; then
      say "rolled back on a fail verdict $(( $(date +%s) - shifted_at )) s after the 10 % push:"
      git -C "$work/gitops" log -1 --format='%h %s%n%n%b' "$commit"
      kubectl -n demo get workflows
      exit 0
    fi
    say "a rollback commit without a fail verdict (Prometheus unreachable, a crash, the exit handler?):"
    git -C "$work/gitops" log -1 --format='%h %s%n%n%b' "$commit"
    kubectl -n demo get workflows || true
    exit 1
  done
  sleep 5
done
say "no rollback commit within 10 minutes; look at: kubectl -n demo get workflows; kubectl -n argocd get app podinfo"
kubectl -n demo get workflows || true
exit 1
