{{/* Chart name, truncated to a DNS label. */}}
{{- define "kubeinfer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name of every object; the release name alone when it already says kubeinfer. */}}
{{- define "kubeinfer.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kubeinfer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "kubeinfer.labels" -}}
helm.sh/chart: {{ include "kubeinfer.chart" . }}
{{ include "kubeinfer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubeinfer
{{- end }}

{{/* Labels that select the operator pod (immutable in the Deployment: keep them few). */}}
{{- define "kubeinfer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubeinfer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator's ServiceAccount: a name is required when the chart does not create it. */}}
{{- define "kubeinfer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubeinfer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator's identity as the apiserver sees it (admission policies match on it). */}}
{{- define "kubeinfer.operatorUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "kubeinfer.serviceAccountName" .) }}
{{- end }}

{{/* A label map as `k=v,k2=v2` (sorted keys). */}}
{{- define "kubeinfer.labelList" -}}
{{- $pairs := list }}
{{- range $key, $value := . }}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{- define "kubeinfer.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "kubeinfer.workerImage" -}}
{{- printf "%s:%s" .Values.workerImage.repository (default .Chart.AppVersion .Values.workerImage.tag) }}
{{- end }}

{{/*
RBAC rules for the namespaced objects the operator manages. The same list goes into the ClusterRole
(cluster-wide mode) or into one Role per watched namespace (namespaced mode). Explicit verbs only,
exactly kubeinfer_operator/permissions.py (a unit test keeps the two equal; the e2e suite runs the
operator under these rules).
*/}}
{{- define "kubeinfer.namespacedRules" -}}
# The jobs: kopf watches them and patches finalizers and annotations; ttlSecondsAfterFinished deletes them.
- apiGroups: [kubeinfer.io]
  resources: [distributedinferences]
  verbs: [get, list, watch, patch, delete]
- apiGroups: [kubeinfer.io]
  resources: [distributedinferences/status]
  verbs: [get, patch]
# Owner references with blockOwnerDeletion need this where OwnerReferencesPermissionEnforcement is on.
- apiGroups: [kubeinfer.io]
  resources: [distributedinferences/finalizers]
  verbs: [update]
# Job + progress ConfigMaps; the progress ones are watched to wake the job's loop.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch]
# Children of a job: headless Service, worker ServiceAccount, StatefulSet (watched).
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, patch, delete]
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, create, patch]
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [get, list, watch, create, patch, delete]
# The job's NetworkPolicy (workers.networkPolicy); deleted with the job by the garbage collector.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, create, patch]
# Worker pods are watched and read for failures; a gang restart deletes them.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch, delete]
# The worker Role may get/patch the job's progress ConfigMap; RBAC lets the operator grant that
# only because it holds configmaps get/patch itself (above).
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, create, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# Gang scheduling: one PodGroup per attempt, deleted with the attempt (no watch: the pods tell).
- apiGroups: [scheduling.k8s.io]
  resources: [podgroups]
  verbs: [get, create, delete]
{{- if .Values.kueue.enabled }}
# Kueue: the job's Workload (created, watched, its spec.active and status patched).
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads]
  verbs: [get, list, watch, create, patch]
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads/status]
  verbs: [get, patch]
# While a job waits: its LocalQueue's counts, for the Queued message.
- apiGroups: [kueue.x-k8s.io]
  resources: [localqueues]
  verbs: [get]
{{- end }}
{{- end }}

{{/* Cluster-scoped, read-only: needed in both modes. */}}
{{- define "kubeinfer.clusterRules" -}}
# kopf discovers the CRD and notices it (re)appearing.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
# Workers on a NotReady (or vanished) node are restarted elsewhere (node readiness is watched).
- apiGroups: [""]
  resources: [nodes]
  verbs: [list, watch]
# kopf watches namespaces when it serves namespace patterns.
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- if .Values.kueue.enabled }}
# Kueue: an admission's flavors (node labels, tolerations) and the job's priority for its Workload.
- apiGroups: [kueue.x-k8s.io]
  resources: [resourceflavors, workloadpriorityclasses]
  verbs: [get]
- apiGroups: [scheduling.k8s.io]
  resources: [priorityclasses]
  verbs: [get]
{{- end }}
{{- end }}
