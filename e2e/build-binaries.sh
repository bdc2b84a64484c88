#!/usr/bin/env bash
# Builds the local cluster's binaries from official Go modules into a versioned cache.
# Idempotent: each component is skipped when its cached binary is present.
#   ~/.cache/rollwise/k8s-<ver>/   kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl
#   ~/.cache/rollwise/etcd-<ver>/  etcd etcdctl
#   ~/.cache/rollwise/kwok-<ver>/  kwok
#   ~/.cache/rollwise/helm-<ver>/  helm
#   ~/.cache/rollwise/coredns-<ver>/ coredns (cluster DNS, run on the host like kube-proxy)
#   ~/.cache/rollwise/traefik-<ver>/ traefik (the Gateway API data plane, run on the host too)
#   ~/.cache/rollwise/metrics-server-<ver>/ metrics-server (pods' CPU for HPAs, on the host too)
#   ~/.cache/rollwise/ghz-<ver>/   ghz (bench/serving.py's gRPC load; not in `all`: no test needs it)
set -euo pipefail
KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.14}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v3.21.4}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.14.7}"
TRAEFIK_VERSION="${TRAEFIK_VERSION:-v3.7.13}"
METRICS_SERVER_VERSION="${METRICS_SERVER_VERSION:-v0.8.0}"
GHZ_VERSION="${GHZ_VERSION:-v0.93.0}"  # bench/serving.py's GHZ_VERSION
CACHE="${ROLLWISE_CACHE:-$HOME/.cache/rollwise}"
here="$(cd "$(dirname "$0")" && pwd)"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
start=$(date +%s)

log() { printf '[build %4ss] %s\n' "$(( $(date +%s) - start ))" "$*" >&2; }

throwaway() { mktemp -d; }  # a fresh throwaway Go module dir

build_kube() (  # subshell: its own cwd and EXIT trap
  local out="$CACHE/k8s-$KUBE_VERSION"
  local bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
  local missing=0
  for b in "${bins[@]}"; do [ -x "$out/$b" ] || missing=1; done
  [ "$missing" = 0 ] && { log "kubernetes $KUBE_VERSION cached in $out"; return; }
  log "building kubernetes $KUBE_VERSION (cold: 20-40 min on 2 cores)"
  local w; w="$(throwaway)"; trap 'cd /; rm -rf "$w"' EXIT
  cd "$w"
  # k8s.io/kubernetes pins staging modules at v0.0.0 with ./staging replaces; read its go.mod from the
  # module proxy and pin every staging module at the matching v0.X.Y release.
  local kmod
  kmod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  test -s "$kmod"
  go mod init example.local/kubebins >/dev/null 2>&1
  local staging="v0.${KUBE_VERSION#v1.}" m
  for m in $(grep -oE 'k8s\.io/[A-Za-z0-9._-]+[[:space:]]+=>[[:space:]]+\./staging/' "$kmod" | awk '{print $1}' | sort -u); do
    go mod edit -replace="${m}=${m}@${staging}"
  done
  # Match upstream GODEBUG defaults.
  sed -n 's/^godebug[[:space:]]\{1,\}\([^[:space:](]\{1,\}\).*/\1/p' "$kmod" | while read -r kv; do go mod edit -godebug="$kv"; done
  local pkgs=() b
  for b in "${bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  go get "${pkgs[@]/%/@$KUBE_VERSION}" >/dev/null
  local minor ldf="-s -w" p
  minor="$(echo "$KUBE_VERSION" | cut -d. -f2)"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=2000-01-01T00:00:00Z"
  done
  mkdir -p "$out.tmp"
  CGO_ENABLED=0 go build -trimpath -tags selinux,notest,grpcnotrace -ldflags "$ldf" -o "$out.tmp/" "${pkgs[@]}"
  rm -rf "$out"; mv "$out.tmp" "$out"
  "$out/kube-apiserver" --version >&2
)

build_etcd() (  # subshell: its own cwd and EXIT trap
  local out="$CACHE/etcd-$ETCD_VERSION"
  [ -x "$out/etcd" ] && { log "etcd $ETCD_VERSION cached"; return; }
  log "building etcd $ETCD_VERSION"
  local w; w="$(throwaway)"; trap 'cd /; rm -rf "$w"' EXIT
  cd "$w"; go mod init example.local/etcdbin >/dev/null 2>&1
  # server/go.mod carries ../ replaces, so go install refuses it; a consumer module resolves real versions.
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
  mkdir -p "$out.tmp"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3
  rm -rf "$out"; mv "$out.tmp" "$out"
)

build_kwok() (  # subshell: its own cwd and EXIT trap
  local out="$CACHE/kwok-$KWOK_VERSION"
  [ -x "$out/kwok" ] && [ -d "$out/stages" ] && { log "kwok $KWOK_VERSION cached"; return; }
  log "building kwok $KWOK_VERSION"
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  # The stage definitions ship in the module zip; kwok >= 0.8 needs them passed with --config.
  local mod; mod="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION"
  mkdir -p "$out.tmp/stages"
  cp -r "$mod/kustomize/." "$out.tmp/stages/"; chmod -R u+w "$out.tmp/stages"
  rm -rf "$out"; mv "$out.tmp" "$out"
)

build_helm() (  # subshell: its own cwd and EXIT trap
  local out="$CACHE/helm-$HELM_VERSION"
  [ -x "$out/helm" ] && { log "helm $HELM_VERSION cached"; return; }
  log "building helm $HELM_VERSION"
  local minor; minor="$(echo "$KUBE_VERSION" | cut -d. -f2)"
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w \
    -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  rm -rf "$out"; mv "$out.tmp" "$out"
)

go_install() (  # NAME VERSION PACKAGE: a module whose go.mod has no replace/exclude at that release
  local name="$1" version="$2" package="$3"
  local out="$CACHE/$name-$version"
  [ -x "$out/$name" ] && { log "$name $version cached"; return; }
  log "building $name $version"
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "$package@$version"
  rm -rf "$out"; mv "$out.tmp" "$out"
)

build_coredns() { go_install coredns "$COREDNS_VERSION" github.com/coredns/coredns; }

build_traefik() (  # subshell: its own cwd and EXIT trap
  local out="$CACHE/traefik-$TRAEFIK_VERSION"
  [ -x "$out/traefik" ] && { log "traefik $TRAEFIK_VERSION cached"; return; }
  log "building traefik $TRAEFIK_VERSION (cold: about 10 min on 2 cores)"
  local w; w="$(throwaway)"; trap 'cd /; rm -rf "$w"' EXIT
  cd "$w"
  # Three things keep `go install` from building traefik from the module proxy, and this consumer
  # module works around each, changing no routing code:
  # - traefik's go.mod replaces github.com/traefik/traefik/dynamic/ext with a directory of its own
  #   repository that is a module of its own, so the proxy's zip of traefik lacks it. It is an
  #   extension point (two structs inlined in the dynamic configuration, empty in the open-source
  #   build): supplied here as such.
  # - its basic/digest auth middlewares use a fork of github.com/abbot/go-http-auth that the proxy
  #   does not serve: the upstream v0.4.0 release stands in, with the fork's two extra functions
  #   in e2e/traefik/goauth_compat.go (our own, written against v0.4.0's internals).
  # - its ACME provider links lego's DNS-challenge providers, several of whose cloud SDKs the proxy
  #   does not serve: lego's own module is used with that one registry file replaced by a function
  #   that refuses every DNS provider (ACME is off here: the local cluster has no public DNS).
  mkdir ext
  printf 'module github.com/traefik/traefik/dynamic/ext\n\ngo 1.24\n' > ext/go.mod
  printf '// Package ext: the dynamic configuration extension point, empty here.\npackage ext\n\n// HTTP is inlined in dynamic.HTTPConfiguration.\ntype HTTP struct{}\n\n// Router is inlined in dynamic.Router.\ntype Router struct{}\n' > ext/ext.go
  go mod init example.local/traefikbin >/dev/null 2>&1
  local tmod
  tmod="$(go mod download -json "github.com/traefik/traefik/v3@$TRAEFIK_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  test -s "$tmod"
  local lego_ver; lego_ver="$(sed -n 's/^[[:space:]]*github.com\/go-acme\/lego\/v5 \(v[^ ]*\).*/\1/p' "$tmod" | head -1)"
  local lego_dir; lego_dir="$(go mod download -json "github.com/go-acme/lego/v5@$lego_ver" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  cp -r "$lego_dir" lego; chmod -R u+w lego
  rm -f lego/providers/dns/*.go
  printf '// Package dns: no DNS-challenge provider in this build.\npackage dns\n\nimport (\n\t"fmt"\n\n\t"github.com/go-acme/lego/v5/challenge"\n)\n\n// NewDNSChallengeProviderByName refuses every provider: ACME DNS challenges are not built in.\nfunc NewDNSChallengeProviderByName(name string) (challenge.Provider, error) {\n\treturn nil, fmt.Errorf("DNS challenge provider %%q is not in this build", name)\n}\n' > lego/providers/dns/dns.go
  local auth_dir; auth_dir="$(go mod download -json github.com/abbot/go-http-auth@v0.4.0 | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  cp -r "$auth_dir" goauth; chmod -R u+w goauth
  [ -f goauth/go.mod ] || printf 'module github.com/abbot/go-http-auth\n\ngo 1.24\n\nrequire golang.org/x/crypto v0.56.0\n' > goauth/go.mod
  cp "$here/traefik/goauth_compat.go" goauth/
  go mod edit -replace=github.com/traefik/traefik/dynamic/ext=./ext -replace=github.com/go-acme/lego/v5=./lego \
    -replace=github.com/abbot/go-http-auth=./goauth
  grep -E '^[[:space:]]*github\.com/gorilla/mux => github\.com/[^ ]+ v[^ ]+$' "$tmod" | while read -r from _ to ver; do
    go mod edit -replace="$from=$to@$ver"
  done
  sed -n 's/^exclude \([^ ]*\) \([^ ]*\)$/\1@\2/p' "$tmod" | while read -r ex; do go mod edit -exclude="$ex"; done
  go get "github.com/traefik/traefik/v3/cmd/traefik@$TRAEFIK_VERSION" >/dev/null
  mkdir -p "$out.tmp"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION" \
    -o "$out.tmp/traefik" github.com/traefik/traefik/v3/cmd/traefik
  rm -rf "$out"; mv "$out.tmp" "$out"
  "$out/traefik" version >&2
)

build_metrics_server() {
  go_install metrics-server "$METRICS_SERVER_VERSION" sigs.k8s.io/metrics-server/cmd/metrics-server
}

build_ghz() { go_install ghz "$GHZ_VERSION" github.com/bojand/ghz/cmd/ghz; }

what="${1:-all}"
case "$what" in
  all) build_etcd; build_kwok; build_helm; build_coredns; build_traefik; build_metrics_server; build_kube ;;
  kube) build_kube ;; etcd) build_etcd ;; kwok) build_kwok ;; helm) build_helm ;; coredns) build_coredns ;;
  traefik) build_traefik ;; metrics-server) build_metrics_server ;; ghz) build_ghz ;;
  *) echo "usage: $0 [all|kube|etcd|kwok|helm|coredns|traefik|metrics-server|ghz]" >&2; exit 2 ;;
esac
log "done"
