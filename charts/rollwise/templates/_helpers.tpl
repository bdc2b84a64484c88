{{/* Names and labels shared by every object of the release. */}}

{{- define "rollwise.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name; the chart name is not repeated when the release already carries it. */}}
{{- define "rollwise.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "rollwise.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rollwise.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "rollwise.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "rollwise.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rollwise
{{- end -}}

{{- define "rollwise.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "rollwise.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: set it to an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
An image reference: repository:tag, and @digest when one is set, so the node runs exactly the image
that was built (a tag can be moved; a digest cannot).
*/}}
{{- define "rollwise.imageRef" -}}
{{- $ref := printf "%s:%s" .image.repository (.image.tag | default .appVersion) -}}
{{- if .image.digest }}{{ $ref = printf "%s@%s" $ref .image.digest }}{{ end -}}
{{- $ref -}}
{{- end -}}

{{- define "rollwise.image" -}}
{{- include "rollwise.imageRef" (dict "image" .Values.image "appVersion" .Chart.AppVersion) -}}
{{- end -}}

{{- define "rollwise.servingImage" -}}
{{- include "rollwise.imageRef" (dict "image" .Values.servingImage "appVersion" .Chart.AppVersion) -}}
{{- end -}}

{{/*
The batch image: what batchImage leaves empty follows servingImage, the tag with -batch added (the
tag serving-image/build-image.sh --variant batch gives); its digest is its own.
*/}}
{{- define "rollwise.batchImage" -}}
{{- $b := .Values.batchImage -}}
{{- $tag := $b.tag | default (printf "%s-batch" (.Values.servingImage.tag | default .Chart.AppVersion)) -}}
{{- $image := dict "repository" ($b.repository | default .Values.servingImage.repository) "tag" $tag "digest" $b.digest -}}
{{- include "rollwise.imageRef" (dict "image" $image "appVersion" .Chart.AppVersion) -}}
{{- end -}}

{{/*
Rules for namespaced objects: the same list goes into the ClusterRole (all namespaces) or the Role
(watchNamespace). Each rule grants exactly the verbs the operator uses on that resource.
*/}}
{{- define "rollwise.namespacedRules" -}}
# The custom resource: read, watch, and patch for Kopf's finalizers and annotations.
- apiGroups: ["rollwise.dev"]
  resources: ["modeldeployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["rollwise.dev"]
  resources: ["modeldeployments/status"]
  verbs: ["get", "patch"]
# The children of a ModelDeployment, applied server-side (create + patch) and pruned (delete).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# ModelBatchJobs (#20): the resource and its status as above; its Indexed Job is created once
# (a Job's template is immutable, and the garbage collector deletes it with its owner); the Job's
# pods are listed (by the Job's label) only to read each shard's termination message. A rollout's
# backtest Job is a ModelDeployment child like the others: watched (by our label), applied
# server-side, and pruned when its candidate is gone, hence list, watch, patch and delete too.
- apiGroups: ["rollwise.dev"]
  resources: ["modelbatchjobs"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["rollwise.dev"]
  resources: ["modelbatchjobs/status"]
  verbs: ["get", "patch"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Every decision is an Event: Kopf posts core/v1 Events, the operator events.k8s.io/v1 ones
# (kube/events.py); both only create. Pods are listed for batch jobs and backtests only: for a
# ModelDeployment's serving the operator reads Deployments' status, never a pod.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
# Routers edit the user's own route object (server-side apply of the weights); never create it.
{{- if .Values.routers.gatewayAPI.enabled }}
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- if .Values.routers.istio.enabled }}
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
# nginx: the user's Ingress gets only the mirror annotation (patch); the canary Ingress
# `<name>-candidate` is ours (create), owned by the ModelDeployment, so the garbage collector
# removes it with it: the operator never deletes an Ingress.
{{- if .Values.routers.nginx.enabled }}
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["get", "list", "watch", "create", "patch"]
{{- end }}
{{- end -}}

{{/* Cluster-scoped reads Kopf makes at start-up and while running, in either mode. */}}
{{- define "rollwise.clusterScopedRules" -}}
# Kopf scans namespaces and CRDs to resolve what it serves.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- end -}}

{{/* Comma-separated router names for ROLLWISE_ROUTERS. */}}
{{- define "rollwise.routers" -}}
{{- $names := list "replicas" -}}
{{- range $name := list "gatewayAPI" "istio" "nginx" -}}
{{- if (index $.Values.routers $name).enabled -}}{{- $names = append $names $name -}}{{- end -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}
